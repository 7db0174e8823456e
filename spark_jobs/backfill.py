"""Re-enrichment of a range of lake hours on Spark, with the in-process asset's rules and I/O.

Why this shape: enriching hour *h* needs the session state at the end of *h-1* and the identities
learned up to *h-1*, so the hour chain is sequential. But both only ever depend on the **session
key** (device, else user — :func:`enrichment.rules.session_keys`): sessions, identity
stitching (device -> user) and the bot rate rule are all per device. So the job splits every hour by
a stable hash of the session key into buckets and walks the hours in order *inside each bucket*,
calling the very same :func:`~enrichment.rules.enrich_hour` on the bucket's slice of
the hour. Per-key state never crosses buckets, so the result equals the whole-hour call row for row.

Stages (all on executors, each parallel):

1. per hour: :func:`enrichment.lake_io.read_raw_hour` (committed objects only, ``ingested_at``
   = commit time), global de-duplication by ``insert_id`` with
   :func:`~enrichment.rules.dedupe_indices` (duplicates may carry different devices, so this
   must happen before the split), split into buckets;
2. shuffle by bucket, sorted by hour; per bucket: walk the hours carrying session state and an
   :class:`IdentityLedger` (ClickHouse ``identity_map`` semantics: earliest ``(first_seen, user_id)``
   per device), ``enrich_hour`` per hour;
3. shuffle by hour; per hour: merge the bucket slices in the output order of the rules
   (``event_time, insert_id`` — unique after de-duplication), :func:`to_parquet_bytes`,
   :func:`enrichment.lake_io.write_enriched` (one object per hour, replaced whole).

The driver lists commit records, loads the initial carry and identity map (inputs written by the
Dagster asset), broadcasts them and collects per-hour stats and learned identities (small).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from enrichment.lake_io import carry_into, hour_parts, hours_between, load_commit_records, read_raw_hour, write_enriched
from enrichment.rules import (
    ENRICHED_SCHEMA,
    EnrichmentConfig,
    dedupe_indices,
    enrich_hour,
    session_keys,
    session_state_from_enriched,
    to_parquet_bytes,
)
from eventpipe_core.lake_catalog import CommitRecord, hour_key
from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import load_settings

# Identity map input: ClickHouse identity_map reduced to the earliest (first_seen, user_id) per device.
IDENTITY_SCHEMA = pa.schema([("device_id", pa.string()), ("user_id", pa.string()), ("first_seen_ms", pa.int64())])
# Learned identities output: the rows the in-process asset would have written with write_identities.
LEARNED_SCHEMA = pa.schema([("device_id", pa.string()), ("user_id", pa.string()),
                            ("first_seen", pa.timestamp("ms", tz="UTC"))])
_DEDUPE_COLUMNS = ["insert_id", "received_at", "kafka_partition", "kafka_offset", "device_id", "user_id"]
_RAW_STATS = ("raw_rows", "duplicates")
# Per-hour stats present even for an hour without rows (enrich_hour's names; others it adds are summed too).
_STAT_KEYS = (*_RAW_STATS, "rows", "bots", "stitched", "plan_violations", "outside_hour")

Carry = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class BackfillSpec:
    """Everything the job needs, as one JSON file (the job never reads Dagster or ClickHouse)."""

    lake_url: str
    start: str  # ISO-8601 start of the first hour (UTC)
    end: str  # exclusive
    session_timeout_minutes: int = 30
    bot_max_events_per_minute: int = 100
    geoip_db_path: str | None = None
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    carry_path: str | None = None  # JSON {session key: [last event ms, session id]}; None = derive from the lake
    identity_path: str | None = None  # Parquet IDENTITY_SCHEMA; None = empty identity map
    learned_path: str | None = None  # output: Parquet LEARNED_SCHEMA
    buckets: int = 0  # 0 = Spark's default parallelism

    @property
    def hours(self) -> list[datetime]:
        return hours_between(datetime.fromisoformat(self.start), datetime.fromisoformat(self.end))

    @property
    def config(self) -> EnrichmentConfig:
        return EnrichmentConfig(timedelta(minutes=self.session_timeout_minutes), self.bot_max_events_per_minute)

    def open_lake(self) -> LakeStore:
        """Credentials come from the executor's own settings (env / instance role), not from the driver."""
        settings = load_settings(lake_url=self.lake_url, aws_endpoint_url=self.aws_endpoint_url, aws_region=self.aws_region)
        return open_lake(settings)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BackfillSpec:
        return cls(**json.loads(text))


@dataclass
class HourResult:
    hour: datetime
    lake_key: str
    stats: dict[str, int]

    @property
    def partition_key(self) -> str:
        return hour_key(*hour_parts(self.hour))


@dataclass
class BackfillOutcome:
    hours: list[HourResult]
    learned: pa.Table  # LEARNED_SCHEMA, in hour order
    buckets: int
    seconds: float
    totals: dict[str, int] = field(default_factory=dict)


# --- identity map with ClickHouse semantics -------------------------------------------------------


class IdentityLedger:
    """device -> earliest (first_seen ms, user_id): what ``argMin(user_id, (first_seen, user_id))`` over
    ``identity_map`` answers after the learned rows of earlier hours were inserted (the in-process asset
    writes them to ClickHouse after each hour and reads them back for the next)."""

    def __init__(self, known: Mapping[str, tuple[int, str]]):
        self.known = known
        self.learned: dict[str, tuple[int, str]] = {}

    def get(self, device: str) -> tuple[int, str] | None:
        return self.learned.get(device) or self.known.get(device)

    def view(self, devices: Iterable[str | None]) -> dict[str, str]:
        """device -> user for the devices of one hour (what ``read_identity_map(devices)`` returns)."""
        out = {}
        for d in set(devices):
            if d and (entry := self.get(d)) is not None:
                out[d] = entry[1]
        return out

    def learn(self, identities: pd.DataFrame) -> None:
        if identities.empty:
            return
        ms = pd.to_datetime(identities["first_seen"], utc=True).astype("datetime64[ms, UTC]").astype("int64")
        for device, user, t in zip(identities["device_id"], identities["user_id"], ms, strict=True):
            candidate, current = (int(t), str(user)), self.get(device)
            if current is None or candidate < current:
                self.learned[device] = candidate


def read_identity_input(path: str | None) -> dict[str, tuple[int, str]]:
    if not path:
        return {}
    t = pq.read_table(path)
    return {d: (int(ms), u) for d, u, ms in zip(t.column("device_id").to_pylist(), t.column("user_id").to_pylist(),
                                                 t.column("first_seen_ms").to_pylist(), strict=True)}


def write_carry(path: str | Path, carry: Mapping[str, tuple[int, int]]) -> None:
    Path(path).write_text(json.dumps({k: list(v) for k, v in sorted(carry.items())}))


def read_carry(path: str | Path) -> Carry:
    return {k: (int(v[0]), int(v[1])) for k, v in json.loads(Path(path).read_text()).items()}


# --- Arrow <-> bytes between stages (no Spark type conversion touches the rows) --------------------


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def bucket_of(key: str, buckets: int) -> int:
    """Stable across processes and machines (Python's ``hash`` is salted per process)."""
    return zlib.crc32(key.encode()) % buckets


# --- stage 1: read + dedupe + split an hour ------------------------------------------------------


def split_hour(index: int, hour: datetime, spec: BackfillSpec, records: list[CommitRecord],
               buckets: int) -> list[tuple[tuple[int, int], tuple[bytes | None, dict[str, int] | None]]]:
    """((bucket, hour index), (Arrow IPC of the bucket's deduplicated raw rows, raw stats)).

    The hour's raw stats ride on bucket 0, which always gets an item, so every hour reaches stage 3."""
    raw = read_raw_hour(spec.open_lake(), hour, records)
    rows = dedupe_indices(raw.select(_DEDUPE_COLUMNS))
    stats = {"raw_rows": raw.num_rows, "duplicates": raw.num_rows - len(rows)}
    out: list[tuple[tuple[int, int], tuple[bytes | None, dict[str, int] | None]]] = []
    by_bucket: dict[int, np.ndarray] = {}
    if len(rows):
        keys = pc.dictionary_encode(session_keys(raw.select(_DEDUPE_COLUMNS).take(pa.array(rows))))
        per_key = np.array([bucket_of(k, buckets) for k in keys.dictionary.to_pylist()], dtype=np.int64)  # once per key
        b = per_key[keys.indices.to_numpy(zero_copy_only=False)]
        by_bucket = {int(x): rows[b == x] for x in np.unique(b)}
    for x in sorted(set(by_bucket) | {0}):
        data = to_ipc(raw.take(pa.array(by_bucket[x]))) if x in by_bucket else None
        out.append(((x, index), (data, stats if x == 0 else None)))
    return out


# --- stage 2: walk the hours of each bucket in order ----------------------------------------------


def enrich_buckets(items: Iterator[tuple[tuple[int, int], tuple[bytes | None, dict[str, int] | None]]], *,
                   hours: list[datetime], spec: BackfillSpec, carry0: Carry, known: Mapping[str, tuple[int, str]],
                   ) -> Iterator[tuple[int, tuple[bytes | None, dict[str, int], bytes | None]]]:
    """Items sorted by (bucket, hour index) -> (hour index, (enriched slice, stats, learned identities))."""
    from enrichment.geoip import open_geoip

    config = spec.config
    geo = open_geoip(Path(spec.geoip_db_path) if spec.geoip_db_path else None)
    try:
        bucket: int | None = None
        ledger = IdentityLedger(known)
        prev: tuple[int, pa.Table | None] = (-1, None)
        for (b, i), (data, raw_stats) in items:
            if b != bucket:
                bucket, ledger, prev = b, IdentityLedger(known), (-1, None)
            hour = hours[i]
            if i == 0:
                carry = carry0
            elif prev[0] == i - 1 and prev[1] is not None:
                carry = session_state_from_enriched(prev[1], hour, config.session_timeout)
            else:  # the bucket had no rows in the previous hour: nothing can continue
                carry = {}
            stats = dict(raw_stats or {})
            if data is None:
                prev = (i, None)
                yield i, (None, stats, None)
                continue
            raw = from_ipc(data)
            result = enrich_hour(raw, hour_start=hour, carry=carry, identity_map=ledger.view(raw.column("device_id").to_pylist()),
                                 geo_lookup=geo, config=config)
            ledger.learn(result.identities)
            for k, v in result.stats.items():
                if k not in _RAW_STATS:  # counted on the whole hour in stage 1
                    stats[k] = stats.get(k, 0) + v
            learned = None
            if not result.identities.empty:
                learned = to_ipc(pa.Table.from_pandas(result.identities[LEARNED_SCHEMA.names], schema=LEARNED_SCHEMA,
                                                      preserve_index=False))
            prev = (i, result.table)
            yield i, (to_ipc(result.table), stats, learned)
    finally:
        if geo is not None:
            geo.close()


# --- stage 3: one file per hour ---------------------------------------------------------------------


def merge_hour(tables: list[pa.Table]) -> pa.Table:
    """Bucket slices of one hour -> the hour's table in the rules' output order (event_time, insert_id)."""
    if not tables:
        return ENRICHED_SCHEMA.empty_table()
    merged = pa.concat_tables(tables).sort_by([("event_time", "ascending"), ("insert_id", "ascending")])
    return merged.combine_chunks()


def write_hours(items: Iterator[tuple[int, Iterable[tuple[bytes | None, dict[str, int], bytes | None]]]], *,
                hours: list[datetime], spec: BackfillSpec) -> Iterator[dict[str, Any]]:
    lake = spec.open_lake()
    for i, parts in items:
        tables, learned, stats = [], [], dict.fromkeys(_STAT_KEYS, 0)
        for data, part_stats, ids in parts:
            if data is not None:
                tables.append(from_ipc(data))
            if ids is not None:
                learned.append(from_ipc(ids))
            for k, v in part_stats.items():
                stats[k] = stats.get(k, 0) + v
        key = write_enriched(lake, hours[i], to_parquet_bytes(merge_hour(tables)))
        ids_table = pa.concat_tables(learned).sort_by([("device_id", "ascending"), ("user_id", "ascending")]) if learned else None
        yield {"index": i, "lake_key": key, "stats": stats, "learned": to_ipc(ids_table) if ids_table is not None else None}


# --- driver ------------------------------------------------------------------------------------------


def _records_for(records: list[CommitRecord], hours: list[datetime]) -> list[CommitRecord]:
    """Only the commit records naming objects of these hours (they are broadcast to every executor)."""
    wanted = {hour_parts(h) for h in hours}
    return [r for r in records if any((o.event_date, o.event_hour) in wanted for o in r.objects)]


def initial_carry(spec: BackfillSpec, records: list[CommitRecord]) -> Carry:
    """Session state entering the first hour: the carry file the asset wrote, else the asset's own rule."""
    if spec.carry_path:
        return read_carry(spec.carry_path)
    return carry_into(spec.open_lake(), spec.hours[0], records, spec.config)  # the in-process asset's rule


def run_backfill(spark: Any, spec: BackfillSpec, log: Callable[[str], None] = print) -> BackfillOutcome:
    """Enrich ``spec``'s hours on ``spark`` (a SparkSession); writes enriched/… and ``spec.learned_path``."""
    started = time.monotonic()
    hours = spec.hours
    if not hours:
        raise ValueError(f"empty hour range {spec.start} .. {spec.end}")
    sc = spark.sparkContext
    buckets = spec.buckets or max(sc.defaultParallelism, 1)
    all_records = load_commit_records(spec.open_lake())
    records = _records_for(all_records, [hours[0] - timedelta(hours=1), *hours])
    carry0 = initial_carry(spec, records)
    known = read_identity_input(spec.identity_path)
    log(f"backfill {len(hours)} hours {hours[0]:%Y-%m-%d %H:00} .. {hours[-1]:%Y-%m-%d %H:00} in {buckets} buckets; "
        f"{len(records)} commit records, {len(known)} known identities, {len(carry0)} carried sessions")
    b_records, b_carry, b_known = sc.broadcast(records), sc.broadcast(carry0), sc.broadcast(known)
    hour_slices = max(1, min(len(hours), buckets * 2))
    out_slices = max(1, min(len(hours), buckets))

    stage1 = sc.parallelize(list(enumerate(hours)), hour_slices).flatMap(
        lambda ih: split_hour(ih[0], ih[1], spec, b_records.value, buckets))
    stage2 = stage1.repartitionAndSortWithinPartitions(buckets, partitionFunc=lambda k: k[0]).mapPartitions(
        lambda it: enrich_buckets(it, hours=hours, spec=spec, carry0=b_carry.value, known=b_known.value))
    stage3 = stage2.groupByKey(out_slices).mapPartitions(lambda it: write_hours(it, hours=hours, spec=spec))
    collected = sorted(stage3.collect(), key=lambda r: r["index"])
    for b in (b_records, b_carry, b_known):
        b.unpersist()

    results, learned, totals = [], [], {}
    for r in collected:
        results.append(HourResult(hours[r["index"]], r["lake_key"], dict(sorted(r["stats"].items()))))
        if r["learned"] is not None:
            learned.append(from_ipc(r["learned"]))
        for k, v in r["stats"].items():
            totals[k] = totals.get(k, 0) + v
    learned_table = pa.concat_tables(learned) if learned else LEARNED_SCHEMA.empty_table()
    if spec.learned_path:
        pq.write_table(learned_table, spec.learned_path)
    if len(results) != len(hours):
        raise RuntimeError(f"expected {len(hours)} hours, wrote {len(results)}")
    # the lake days queries read past the ClickHouse TTL changed: the query cache's data versions (REDIS_URL of
    # the driver's environment; projects unknown here, so every project's)
    from eventpipe_core import data_versions

    data_versions.bump(load_settings(), data_versions.EVENTS, sorted({h.date() for h in hours}))
    return BackfillOutcome(results, learned_table, buckets, time.monotonic() - started, dict(sorted(totals.items())))


def hour_range(start: datetime, end: datetime) -> tuple[str, str]:
    """ISO strings of [start, end) for :class:`BackfillSpec`."""
    return start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat()
