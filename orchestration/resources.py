"""Dagster resources, all built from the one settings module (:func:`build_resources`).

Resources carry plain values taken from :class:`Settings`; credentials for S3 come from the
settings at run time (never copied into resource config shown in the UI).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from enrichment.rules import EnrichmentConfig
from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import ClickHouseTarget, Settings, get_settings
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse over HTTP (clickhouse-connect) at ``CLICKHOUSE_URL``; schema ensured once per process."""

    url: str
    cluster: str | None = None
    ttl_days: int = 90
    _schema_ready: bool = PrivateAttr(default=False)

    @property
    def target(self) -> ClickHouseTarget:
        """The URL's target; the embedded server's generated password is resolved here, never kept in run config."""
        return get_settings().clickhouse_for(self.url)

    @property
    def plan(self) -> SchemaPlan:
        return SchemaPlan(self.target.database, self.cluster, self.ttl_days)

    def get_client(self):  # noqa: ANN201 - clickhouse_connect Client
        import clickhouse_connect

        t = self.target
        return clickhouse_connect.get_client(
            host=t.host, port=t.port, username=t.user, password=t.password, secure=t.secure,
            connect_timeout=10, send_receive_timeout=600, compress="lz4", autogenerate_session_id=False,
        )

    def ready_client(self):  # noqa: ANN201 - clickhouse_connect Client
        """A client after the tables exist (ensure_schema is idempotent; done once per process)."""
        client = self.get_client()
        if not self._schema_ready:
            ensure_plan(client, self.plan)
            self._schema_ready = True
        return client


class LakeResource(dg.ConfigurableResource):
    """The lake at ``LAKE_URL`` (a directory or S3)."""

    lake_url: str
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"

    def open(self) -> LakeStore:
        s = get_settings().model_copy(update={"aws_endpoint_url": self.aws_endpoint_url, "aws_region": self.aws_region})
        return open_lake(s, self.lake_url)


class MetadataStoreResource(dg.ConfigurableResource):
    """The metadata database (``METADATA_DB_URL``: sqlite locally, Postgres in production)."""

    url: str

    def engine(self):  # noqa: ANN201 - sqlalchemy Engine
        import sqlalchemy

        return sqlalchemy.create_engine(self.url)


class EnrichmentResource(dg.ConfigurableResource):
    """Enrichment parameters and the geo-IP database path (``GEOIP_DB_PATH``)."""

    session_timeout_minutes: int = 30
    bot_max_events_per_minute: int = 100
    geoip_db_path: str | None = None

    @property
    def config(self) -> EnrichmentConfig:
        return EnrichmentConfig(timedelta(minutes=self.session_timeout_minutes), self.bot_max_events_per_minute)

    def open_geoip(self):  # noqa: ANN201 - GeoIpDatabase | None
        from enrichment.geoip import open_geoip

        return open_geoip(Path(self.geoip_db_path) if self.geoip_db_path else None)


def dbt_project_dir() -> Path:
    """``dbt_project/`` at the repository root (next to this package)."""
    return Path(__file__).resolve().parent.parent / "dbt_project"


def build_resources(settings: Settings) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "clickhouse": ClickHouseResource(
            url=settings.clickhouse_url, cluster=settings.clickhouse_cluster, ttl_days=settings.clickhouse_ttl_days
        ),
        "lake": LakeResource(
            lake_url=str(settings.lake_url), aws_endpoint_url=settings.aws_endpoint_url, aws_region=settings.aws_region
        ),
        "metadata_store": MetadataStoreResource(url=str(settings.metadata_db_url)),
        "enrichment": EnrichmentResource(
            session_timeout_minutes=settings.session_timeout_minutes,
            bot_max_events_per_minute=settings.bot_max_events_per_minute,
            geoip_db_path=str(settings.geoip_db_path) if settings.geoip_db_path else None,
        ),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
    # The `dbt` resource (DbtCliResource + DBT_CH_* env from CLICKHOUSE_URL) comes with the dbt
    # definitions (orchestration.definitions.dbt_definitions hook).
    return resources
