"""The metadata store (``METADATA_DB_URL``): projects, API keys, tracking plans and what later features add.

A lower package so the collector, orchestration, the query service and the CLI share one store without
reaching into each other. Layout: ``store.py`` holds the engine, the core tables and :class:`MetadataStore`;
each further feature adds its own module here whose tables register on :data:`meta` (imported below, so
``ensure_schema`` creates them). New features add *tables*, not columns to existing ones, so an existing
database gains them through ``create_all`` without a migration; a column change needs an explicit,
idempotent step in ``MetadataStore.ensure_schema``.
"""

# Feature modules: importing them registers their tables on ``meta``.
from eventpipe_core.metadata import alerts, cohorts, projects_settings, secrets  # noqa: E402, F401
from eventpipe_core.metadata.charts import CHART_KINDS, ChartStore, WebSession, charts, dashboards, web_sessions  # noqa: E402
from eventpipe_core.metadata.funnels import FunnelDef, FunnelRegistry, funnels, parse_steps, parse_window
from eventpipe_core.metadata.store import (
    ENFORCEMENT_MODES,
    KeyInfo,
    MetadataError,
    MetadataStore,
    ProjectPlan,
    api_keys,
    check_json_schema,
    event_schemas,
    get_metadata_store,
    meta,
    projects,
)

__all__ = [
    "CHART_KINDS",
    "ChartStore",
    "WebSession",
    "charts",
    "dashboards",
    "web_sessions",
    "ENFORCEMENT_MODES",
    "FunnelDef",
    "FunnelRegistry",
    "funnels",
    "parse_steps",
    "parse_window",
    "KeyInfo",
    "MetadataError",
    "MetadataStore",
    "ProjectPlan",
    "api_keys",
    "check_json_schema",
    "event_schemas",
    "get_metadata_store",
    "meta",
    "projects",
]
