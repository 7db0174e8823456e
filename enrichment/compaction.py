"""Lake compaction: each closed hour's small landed objects -> one object per (Kafka partition, event hour).

The landing consumer flushes every ``CONSUMER_FLUSH_AGE_S`` (30 s), so a quiet stream leaves thousands of
tiny Parquet objects a day (~510 B/event against ~56 B/event for one object per partition and hour).
This rewrites them without touching the landing protocol (ingest_consumer): commit records stay as
they are; a **compaction record** (eventpipe_core.lake_catalog) names the new object and the keys it
replaces, and every reader applies it.

Per (partition, hour) whose hour ended at least ``closed_after`` ago and has two or more visible objects:

1. read the commit records, *then* the compaction records (the order readers use), and the visible
   objects of the group;
2. write their rows, ``ingested_at`` kept as a column, sorted by Kafka offset, to a new object with an
   attempt-unique name ``c-p<partition>-g<generation>-<written ms>-<random>.parquet`` (invisible: no
   record names it);
3. create the compaction record ``…/p=<partition>/<generation>.json`` with a conditional create — the
   commit point. A lost race (another compactor made that generation) deletes its own object.

Whatever instant a compactor dies, readers see either the old objects or the new one, never both and
never neither: before step 3 nothing changed; after it the replaced keys are hidden and the new object
holds exactly their rows. Objects landed after step 1 are not replaced and stay visible beside it (late
data), and a later generation may compact them together with the compacted object.

:func:`vacuum` reclaims space: replaced objects once their compaction record is older than ``retain``
(a reader that listed them just before the compaction may still be reading them), and compacted objects
of dead attempts (named by no record) older than ``retain``. The landing's own cleanup never touches
compacted objects (their names are not landing names) nor replaced ones (commit records name them).
"""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from enrichment.lake_io import RAW_WITH_INGESTED, read_visible_object
from eventpipe_core.lake_catalog import (
    RAW_PREFIX,
    CompactionRecord,
    LandedObject,
    VisibleObject,
    hour_dir,
    hour_objects,
    iter_commit_records,
    iter_compaction_records,
)
from eventpipe_core.lake_store import LakeStore

HOUR_MS = 3_600_000
_COMPACTED_RE = re.compile(r"^c-p(\d{5})-g(\d{12})-(\d{13})-([0-9a-f]{12})\.parquet$")


def compacted_key(event_date: str, event_hour: str, kafka_partition: int, generation: int, written_ms: int) -> str:
    name = f"c-p{kafka_partition:05d}-g{generation:012d}-{written_ms:013d}-{uuid.uuid4().hex[:12]}.parquet"
    return hour_dir(RAW_PREFIX, event_date, event_hour) + name


def compacted_written_ms(key: str) -> int | None:
    """Write time of a compacted object from its name; None when ``key`` is not a compacted object."""
    m = _COMPACTED_RE.match(key.rsplit("/", 1)[-1])
    return int(m[3]) if m and key.startswith(RAW_PREFIX) else None


@dataclass(frozen=True)
class Group:
    """One (partition, hour) to compact: its visible objects and the generation to create."""

    event_date: str
    event_hour: str
    kafka_partition: int
    objects: tuple[VisibleObject, ...]
    generation: int

    @property
    def hour_start_ms(self) -> int:
        return int(datetime.strptime(f"{self.event_date} {self.event_hour}", "%Y-%m-%d %H").replace(tzinfo=UTC).timestamp()
                   * 1000)


@dataclass
class CompactionResult:
    groups: int = 0  # (partition, hour) groups compacted
    objects_replaced: int = 0
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    lost: int = 0  # groups another compactor committed first
    committed: list[str] = field(default_factory=list)  # compaction record keys


def plan_compaction(lake: LakeStore, *, closed_before_ms: int, min_objects: int = 2) -> list[Group]:
    """Groups of closed hours (ended at or before ``closed_before_ms``) with at least ``min_objects`` objects."""
    records = list(iter_commit_records(lake))
    compactions = list(iter_compaction_records(lake))  # after the commit records (see lake_catalog)
    next_gen: dict[tuple[str, str, int], int] = {}
    for c in compactions:
        k = (c.event_date, c.event_hour, c.kafka_partition)
        next_gen[k] = max(next_gen.get(k, 0), c.generation + 1)
    by_group: dict[tuple[str, str, int], list[VisibleObject]] = {}
    for v in hour_objects(lake, records=records, compactions=compactions):
        by_group.setdefault((v.object.event_date, v.object.event_hour, v.kafka_partition), []).append(v)
    groups = []
    for (date, hour, partition), objects in sorted(by_group.items()):
        g = Group(date, hour, partition, tuple(objects), next_gen.get((date, hour, partition), 0))
        if len(objects) >= min_objects and g.hour_start_ms + HOUR_MS <= closed_before_ms:
            groups.append(g)
    return groups


def compacted_table(lake: LakeStore, objects: Iterable[VisibleObject]) -> tuple[pa.Table, int]:
    """The rows of ``objects`` (RAW_WITH_INGESTED) sorted by Kafka offset, and the bytes they took."""
    tables, size = [], 0
    for v in objects:
        t, n = read_visible_object(lake, v)
        tables.append(t)
        size += n
    table = pa.concat_tables(tables).combine_chunks() if tables else RAW_WITH_INGESTED.empty_table()
    return table.sort_by([("kafka_offset", "ascending")]), size


def compact_group(lake: LakeStore, group: Group, writer_id: str, now_ms: int | None = None,
                  result: CompactionResult | None = None) -> CompactionRecord | None:
    """Steps 2-3 for one group; the record if this attempt committed it, None if another did."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    table, size_before = compacted_table(lake, group.objects)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=6, row_group_size=1_000_000)
    data = sink.getvalue()
    key = compacted_key(group.event_date, group.event_hour, group.kafka_partition, group.generation, now_ms)
    lake.put(key, data)
    times = table.column("event_time").cast(pa.int64()).to_numpy()
    offsets = table.column("kafka_offset").to_numpy()
    obj = LandedObject(key, group.event_date, group.event_hour, table.num_rows, int(times.min()), int(times.max()))
    record = CompactionRecord(
        kafka_partition=group.kafka_partition, event_date=group.event_date, event_hour=group.event_hour,
        generation=group.generation, object=obj, replaces=tuple(v.object.key for v in group.objects),
        start_offset=int(offsets.min()), end_offset=int(offsets.max()) + 1, created_at_ms=now_ms, writer_id=writer_id,
        extra={"bytes_before": size_before, "bytes_after": len(data)},
    )
    if not lake.put_if_absent(record.key, record.to_json()):
        lake.delete(key)
        if result is not None:
            result.lost += 1
        return None
    if result is not None:
        result.groups += 1
        result.objects_replaced += len(group.objects)
        result.rows += table.num_rows
        result.bytes_before += size_before
        result.bytes_after += len(data)
        result.committed.append(record.key)
    return record


def compact_lake(lake: LakeStore, *, closed_before_ms: int, min_objects: int = 2, writer_id: str = "compaction",
                 on_group: Callable[[Group, CompactionRecord | None], None] | None = None) -> CompactionResult:
    """Plan, then compact every group (each independently committed: an interrupted run resumes from the rest)."""
    result = CompactionResult()
    for group in plan_compaction(lake, closed_before_ms=closed_before_ms, min_objects=min_objects):
        record = compact_group(lake, group, writer_id, result=result)
        if on_group is not None:
            on_group(group, record)
    return result


@dataclass
class VacuumResult:
    replaced_deleted: int = 0
    orphans_deleted: int = 0


def vacuum(lake: LakeStore, *, retain_s: float, now_ms: int | None = None) -> VacuumResult:
    """Delete replaced objects of compaction records older than ``retain_s`` and dead attempts' compacted objects."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - int(retain_s * 1000)
    out = VacuumResult()
    candidates = [k for k in lake.list(RAW_PREFIX) if (w := compacted_written_ms(k)) is not None and w <= cutoff]
    compactions = list(iter_compaction_records(lake))  # after listing: an object committed meanwhile is named
    named = {c.object.key for c in compactions}
    for c in compactions:
        if c.created_at_ms <= cutoff:
            for key in c.replaces:
                if lake.exists(key):
                    lake.delete(key)
                    out.replaced_deleted += 1
    replaced = {k for c in compactions for k in c.replaces}
    for key in candidates:
        if key not in named and key not in replaced:
            lake.delete(key)
            out.orphans_deleted += 1
    return out
