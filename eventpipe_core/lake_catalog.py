"""The landing commit log: what readers of the lake see.

The ingest consumer writes data objects first, then one **commit record** per landed batch with a
conditional create at ``raw/events/_commits/p=<kafka partition>/<seq>.json``. Record ``seq`` k+1
starts at the Kafka offset where record k ended, so the per-partition log is a gap-free,
overlap-free cover of the topic. Only objects named in commit records exist for readers; anything
else under ``raw/events/`` is a leftover of a crashed or fenced attempt.

This module is the read side (used by `eventpipe lake files`, the Dagster sensor and assets, Spark)
plus the record type and key layout the writer uses.

Compaction (``enrichment.compaction``) rewrites one (Kafka partition, event hour)'s visible objects
into one object and creates a **compaction record** at
``raw/events/_compactions/event_date=…/event_hour=…/p=<partition>/<generation>.json`` (conditional
create, generation g+1 after g) naming the new object and the keys it *replaces*. What a reader sees
of an hour is then: the objects of the commit records, plus the objects of the compaction records,
minus every replaced key. A compacted object holds the rows of the objects it replaces and their
``ingested_at`` (the commit time of each row's batch) as a column. Readers must read the commit
records **before** the compaction records (:func:`hour_objects` does): a compaction seen then only
replaces objects committed earlier, so no row is seen twice or missed. Replaced objects are deleted
only once their compaction record is older than a retention period, so a reader that listed them
just before the compaction can still read them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from eventpipe_core.lake_store import LakeStore

RAW_PREFIX = "raw/events/"
COMMITS_PREFIX = "raw/events/_commits/"
COMPACTIONS_PREFIX = "raw/events/_compactions/"
ENRICHED_PREFIX = "enriched/events/"


def commit_key(kafka_partition: int, seq: int) -> str:
    return f"{COMMITS_PREFIX}p={kafka_partition:05d}/{seq:012d}.json"


def hour_dir(prefix: str, event_date: str, event_hour: str) -> str:
    return f"{prefix}event_date={event_date}/event_hour={event_hour}/"


def hour_key(event_date: str, event_hour: str) -> str:
    """Dagster hourly partition key for a lake hour: ``YYYY-MM-DD-HH:00``."""
    return f"{event_date}-{event_hour}:00"


@dataclass(frozen=True)
class LandedObject:
    key: str  # lake key of one Parquet object
    event_date: str  # YYYY-MM-DD (UTC)
    event_hour: str  # HH
    rows: int
    min_event_time_ms: int
    max_event_time_ms: int

    @property
    def partition_key(self) -> str:
        return hour_key(self.event_date, self.event_hour)


@dataclass(frozen=True)
class CommitRecord:
    """One landed batch: Kafka range [start_offset, end_offset) of one partition -> objects."""

    topic: str
    kafka_partition: int
    seq: int
    start_offset: int
    end_offset: int  # exclusive; == next record's start_offset
    objects: tuple[LandedObject, ...]
    committed_at_ms: int
    writer_id: str
    records: int = 0  # Kafka records consumed (rows landed + dead-lettered)
    dead_lettered: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return commit_key(self.kafka_partition, self.seq)

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.objects)

    @property
    def rows_per_hour(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.objects:
            out[o.partition_key] = out.get(o.partition_key, 0) + o.rows
        return out

    @property
    def min_event_time_ms(self) -> int | None:
        return min((o.min_event_time_ms for o in self.objects), default=None)

    @property
    def max_event_time_ms(self) -> int | None:
        return max((o.max_event_time_ms for o in self.objects), default=None)

    def to_json(self) -> bytes:
        body = asdict(self)
        body["rows_per_hour"] = self.rows_per_hour
        body["min_event_time_ms"] = self.min_event_time_ms
        body["max_event_time_ms"] = self.max_event_time_ms
        return json.dumps(body, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CommitRecord:
        body = json.loads(data)
        objects = tuple(LandedObject(**o) for o in body.pop("objects"))
        for derived in ("rows_per_hour", "min_event_time_ms", "max_event_time_ms"):
            body.pop(derived, None)
        return cls(objects=objects, **body)


def _seq_of(key: str) -> int:
    return int(key.rsplit("/", 1)[1].removesuffix(".json"))


def _partition_of(key: str) -> int:
    return int(key[len(COMMITS_PREFIX):].split("/", 1)[0].removeprefix("p="))


def commit_keys(lake: LakeStore) -> dict[int, list[str]]:
    """Commit-record keys per Kafka partition, in sequence order."""
    out: dict[int, list[str]] = {}
    for key in lake.list(COMMITS_PREFIX):
        if key.endswith(".json"):
            out.setdefault(_partition_of(key), []).append(key)
    for keys in out.values():
        keys.sort(key=_seq_of)
    return out


def partition_commit_keys(lake: LakeStore, kafka_partition: int) -> list[str]:
    """Commit-record keys of one Kafka partition in sequence order (lists only that partition's prefix)."""
    prefix = commit_key(kafka_partition, 0).rsplit("/", 1)[0] + "/"
    return sorted((k for k in lake.list(prefix) if k.endswith(".json")), key=_seq_of)


def last_partition_commit(lake: LakeStore, kafka_partition: int) -> CommitRecord | None:
    """Like :func:`last_commit` but lists only the one partition's records (what a writer resumes from)."""
    keys = partition_commit_keys(lake, kafka_partition)
    return CommitRecord.from_json(lake.get(keys[-1])) if keys else None


def iter_commit_records(lake: LakeStore, after: dict[int, int] | None = None) -> Iterator[CommitRecord]:
    """Every commit record, per partition in sequence order; ``after`` = {partition: last seen seq}."""
    after = after or {}
    for partition, keys in sorted(commit_keys(lake).items()):
        floor = after.get(partition, -1)
        for key in keys:
            if _seq_of(key) > floor:
                yield CommitRecord.from_json(lake.get(key))


def last_commit(lake: LakeStore, kafka_partition: int) -> CommitRecord | None:
    keys = commit_keys(lake).get(kafka_partition)
    return CommitRecord.from_json(lake.get(keys[-1])) if keys else None


def compaction_key(event_date: str, event_hour: str, kafka_partition: int, generation: int) -> str:
    return f"{hour_dir(COMPACTIONS_PREFIX, event_date, event_hour)}p={kafka_partition:05d}/{generation:012d}.json"


@dataclass(frozen=True)
class CompactionRecord:
    """One rewrite of a (Kafka partition, event hour): ``object`` replaces the objects ``replaces``."""

    kafka_partition: int
    event_date: str
    event_hour: str
    generation: int  # 0, 1, … per (partition, hour); g+1 is created only after g
    object: LandedObject
    replaces: tuple[str, ...]
    start_offset: int  # smallest Kafka offset among the rows (informational)
    end_offset: int  # largest + 1
    created_at_ms: int
    writer_id: str
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return compaction_key(self.event_date, self.event_hour, self.kafka_partition, self.generation)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CompactionRecord:
        body = json.loads(data)
        return cls(object=LandedObject(**body.pop("object")), replaces=tuple(body.pop("replaces")), **body)


def iter_compaction_records(lake: LakeStore, event_date: str | None = None,
                            event_hour: str | None = None) -> Iterator[CompactionRecord]:
    """Compaction records (of one day / hour when given), per hour and partition in generation order."""
    prefix = COMPACTIONS_PREFIX
    if event_date is not None:
        prefix = hour_dir(COMPACTIONS_PREFIX, event_date, event_hour) if event_hour is not None else \
            f"{COMPACTIONS_PREFIX}event_date={event_date}/"
    keys = [k for k in lake.list(prefix) if k.endswith(".json")]
    for key in sorted(keys, key=lambda k: (k.rsplit("/", 1)[0], _seq_of(k))):
        yield CompactionRecord.from_json(lake.get(key))


@dataclass(frozen=True)
class VisibleObject:
    """An object readers read: ``committed_at_ms`` is its batch's commit time (every row's ``ingested_at``),
    None for a compacted object, which carries ``ingested_at`` as a column."""

    object: LandedObject
    kafka_partition: int
    committed_at_ms: int | None


def hour_objects(
    lake: LakeStore, event_date: str | None = None, event_hour: str | None = None,
    records: Iterable[CommitRecord] | None = None, compactions: Iterable[CompactionRecord] | None = None,
) -> list[VisibleObject]:
    """What readers see (of one day / hour): committed objects, compactions applied, in key order.

    ``records`` are read (or were read by the caller) before ``compactions``: see the module docstring."""
    found: dict[str, VisibleObject] = {}
    for record in records if records is not None else iter_commit_records(lake):
        for obj in record.objects:
            if (event_date is None or obj.event_date == event_date) and (event_hour is None or obj.event_hour == event_hour):
                found[obj.key] = VisibleObject(obj, record.kafka_partition, record.committed_at_ms)
    replaced: set[str] = set()
    for comp in compactions if compactions is not None else iter_compaction_records(lake, event_date, event_hour):
        if (event_date is None or comp.event_date == event_date) and (event_hour is None or comp.event_hour == event_hour):
            found[comp.object.key] = VisibleObject(comp.object, comp.kafka_partition, None)
            replaced.update(comp.replaces)
    return [found[k] for k in sorted(found) if k not in replaced]


def committed_objects(
    lake: LakeStore, event_date: str | None = None, event_hour: str | None = None,
    records: Iterable[CommitRecord] | None = None, compactions: Iterable[CompactionRecord] | None = None,
) -> list[LandedObject]:
    """The objects readers may read, optionally for one day / hour, in a stable order (compactions applied)."""
    return [v.object for v in hour_objects(lake, event_date, event_hour, records, compactions)]
