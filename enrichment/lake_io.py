"""Lake reads and writes for one event hour (no Dagster here: the asset and the Spark job both use it).

Readers only see objects named in commit records (eventpipe_core.lake_catalog); each row gets
``ingested_at`` = the commit time of its batch, which keeps enriched output deterministic.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from enrichment.rules import EnrichmentConfig, enrich_hour, session_state_from_enriched
from eventpipe_core.event_model import RAW_EVENT_SCHEMA
from eventpipe_core.lake_catalog import ENRICHED_PREFIX, CommitRecord, VisibleObject, hour_dir, hour_objects, iter_commit_records
from eventpipe_core.lake_store import LakeStore

ENRICHED_FILE = "part-00000.parquet"
RAW_WITH_INGESTED = RAW_EVENT_SCHEMA.append(pa.field("ingested_at", pa.timestamp("ms", tz="UTC"), nullable=False))


def hour_parts(hour_start: datetime) -> tuple[str, str]:
    h = hour_start.astimezone(UTC)
    return h.strftime("%Y-%m-%d"), h.strftime("%H")


def partition_key_to_hour(partition_key: str) -> datetime:
    """Dagster hourly key ``YYYY-MM-DD-HH:MM`` -> the hour's start (UTC)."""
    return datetime.strptime(partition_key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """Hour starts in [start, end)."""
    out, h = [], start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while h < end:
        out.append(h)
        h += timedelta(hours=1)
    return out


def enriched_key(hour_start: datetime) -> str:
    date, hour = hour_parts(hour_start)
    return hour_dir(ENRICHED_PREFIX, date, hour) + ENRICHED_FILE


def load_commit_records(lake: LakeStore) -> list[CommitRecord]:
    """All commit records once (a multi-hour run reads them once, not once per hour)."""
    return list(iter_commit_records(lake))


def read_visible_object(lake: LakeStore, visible: VisibleObject) -> tuple[pa.Table, int]:
    """One visible object as RAW_WITH_INGESTED rows (and its size in bytes)."""
    data = lake.get(visible.object.key)
    t = pq.read_table(io.BytesIO(data))
    if visible.committed_at_ms is None:  # compacted: carries ingested_at
        return t.select(RAW_WITH_INGESTED.names).cast(RAW_WITH_INGESTED), len(data)
    t = t.select(RAW_EVENT_SCHEMA.names).cast(RAW_EVENT_SCHEMA)
    ingested = pa.array([visible.committed_at_ms] * t.num_rows, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    return t.append_column(RAW_WITH_INGESTED.field("ingested_at"), ingested), len(data)


def read_raw_hour(lake: LakeStore, hour_start: datetime, records: Iterable[CommitRecord] | None = None) -> pa.Table:
    """The visible raw rows of one hour (RAW_EVENT_SCHEMA + ``ingested_at``), in a stable order.

    Committed objects get ``ingested_at`` = their batch's commit time; compacted objects carry it
    (eventpipe_core.lake_catalog), so an hour reads the same rows before and after compaction."""
    date, hour = hour_parts(hour_start)
    tables = [read_visible_object(lake, v)[0] for v in hour_objects(lake, date, hour, records)]
    if not tables:
        return RAW_WITH_INGESTED.empty_table()
    return pa.concat_tables(tables)


def write_enriched(lake: LakeStore, hour_start: datetime, data: bytes) -> str:
    """One object per hour, replaced atomically (LakeStore.put)."""
    key = enriched_key(hour_start)
    lake.put(key, data)
    return key


def read_enriched(lake: LakeStore, hour_start: datetime) -> bytes | None:
    try:
        return lake.get(enriched_key(hour_start))
    except KeyError:
        return None


def read_enriched_table(lake: LakeStore, hour_start: datetime) -> pa.Table | None:
    data = read_enriched(lake, hour_start)
    return None if data is None else pq.read_table(io.BytesIO(data))


def carry_into(
    lake: LakeStore, hour: datetime, records: Iterable[CommitRecord], config: EnrichmentConfig
) -> dict[str, tuple[int, int]]:
    """Session state at the start of ``hour``: from the previous hour's enriched file, else from its raw rows
    (enriched on the fly without identities or geo: only event times and session ids matter for the carry)."""
    prev = hour - timedelta(hours=1)
    table = read_enriched_table(lake, prev)
    if table is None:
        raw = read_raw_hour(lake, prev, records)
        if raw.num_rows == 0:
            return {}
        table = enrich_hour(raw, hour_start=prev, config=config).table
    return session_state_from_enriched(table, hour, config.session_timeout)
