"""Enrichment of one lake event hour — the pure transform plus the lake-hour reads and writes.

A component of its own so that both runners import it and neither imports the other: the Dagster
asset (``orchestration.lake.assets``, one process, hour after hour) and the Spark backfill
(``spark_jobs``, per session-key bucket on executors). Depends only on ``eventpipe_core``.

Public API (everything else is private to the package):

* :mod:`enrichment.rules` — :func:`enrich_hour` (raw rows -> :data:`ENRICHED_SCHEMA` rows, deterministic),
  :class:`EnrichmentConfig`, :class:`EnrichResult`, :class:`GeoRecord`, :class:`UserAgentInfo`, :func:`dedupe`,
  :func:`session_key`, :func:`merge_identity_map`, :func:`session_state_from_enriched` (the carry for the
  next hour), :func:`parse_user_agent`,
  :func:`to_parquet_bytes` (fixed writer options: same rows, same bytes), :func:`plan_violation_count`;
* :mod:`enrichment.geoip` — :func:`open_geoip` (MaxMind reader, or None when unconfigured);
* :mod:`enrichment.lake_io` — :func:`read_raw_hour` (committed objects only, ``ingested_at`` = commit time),
  :func:`write_enriched` / :func:`read_enriched` / :func:`read_enriched_table` (one object per hour),
  :func:`carry_into` (session state entering an hour), :func:`load_commit_records`, :func:`hours_between`,
  :func:`hour_parts`, :func:`enriched_key`, :func:`partition_key_to_hour`, :func:`read_visible_object`;
* :mod:`enrichment.compaction` — :func:`compact_lake` (one object per (Kafka partition, closed hour), behind
  compaction records readers apply), :func:`plan_compaction`, :func:`compact_group`, :func:`vacuum`.
"""

from enrichment.lake_io import (
    carry_into,
    enriched_key,
    hour_parts,
    hours_between,
    load_commit_records,
    partition_key_to_hour,
    read_enriched,
    read_enriched_table,
    read_raw_hour,
    write_enriched,
)
from enrichment.rules import (
    ENRICHED_COLUMNS,
    ENRICHED_SCHEMA,
    EnrichmentConfig,
    EnrichResult,
    GeoRecord,
    UserAgentInfo,
    dedupe,
    enrich_hour,
    merge_identity_map,
    parse_user_agent,
    plan_violation_count,
    session_key,
    session_state_from_enriched,
    to_parquet_bytes,
)

__all__ = [
    "ENRICHED_COLUMNS", "ENRICHED_SCHEMA", "EnrichResult", "EnrichmentConfig", "GeoRecord", "UserAgentInfo", "carry_into",
    "dedupe", "enrich_hour", "enriched_key", "merge_identity_map",
    "hour_parts", "hours_between", "load_commit_records", "parse_user_agent",
    "partition_key_to_hour", "plan_violation_count", "read_enriched", "read_enriched_table", "read_raw_hour",
    "session_key", "session_state_from_enriched", "to_parquet_bytes", "write_enriched",
]
