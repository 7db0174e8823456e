"""Helpers for the landing tests: dedicated topics, fast producing, consumer processes, the
exactly-once check (every produced coordinate in exactly one committed row or dead letter)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from eventpipe_core.kafka_clients import admin_config, producer_config
from eventpipe_core.lake_catalog import CommitRecord, iter_commit_records, last_partition_commit
from eventpipe_core.lake_store import LakeStore
from eventpipe_core.settings import Settings
from ingest_consumer.dlq import DlqReader
from ingest_consumer.partitioner import parse_object_key

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
ROOT = Path(__file__).resolve().parent.parent

Coord = tuple[int, int]


def create_topics(settings: Settings, partitions: int = 4) -> tuple[str, str]:
    """A fresh events topic and DLQ topic for one test (tests never share topics)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"ev-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**admin_config(settings))
    try:
        admin.create_topics([NewTopic(name, partitions, 1), NewTopic(f"{name}.dlq", 1, 1)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            meta = admin.describe_topics([name, f"{name}.dlq"])
            if all(len(m.get("partitions") or []) >= 1 and not m.get("error_code") for m in meta):
                break
            time.sleep(0.2)
    finally:
        admin.close()
    return name, f"{name}.dlq"


def envelope(i: int, hours: int = 3, n: int = 1) -> bytes:
    """A compact valid envelope; event times spread over ``hours`` hours so batches split by hour."""
    t = BASE_MS + (i * hours * 3_600_000) // max(n, 1)
    return (
        f'{{"v":1,"event":{{"insert_id":"i{i}","event_type":"view","device_id":"device-{i % 97}","time":{t},'
        f'"event_properties":{{"n":{i}}}}},"project":"demo","received_at":{t + 1000},"client_ip":"203.0.113.9","upload_id":"u"}}'
    ).encode()


POISON = [b"not json {", b'{"v":1,"event":{"event_type":"x","device_id":"device-1","time":1}}', b'{"v":7,"event":{}}']


def produce(
    settings: Settings, topic: str, n: int, poison_every: int = 0, hours: int = 3, start: int = 0,
    pace_s: float = 0.0,
) -> tuple[set[Coord], set[Coord]]:
    """Produce ``n`` records; return (good coordinates, poisoned coordinates) as the broker assigned them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(settings, linger_ms=20, batch_size=256 * 1024, max_block_ms=60_000))
    futures: list[tuple[Any, bool]] = []
    try:
        for i in range(start, start + n):
            poisoned = bool(poison_every) and i % poison_every == poison_every - 1
            value = POISON[i % len(POISON)] if poisoned else envelope(i, hours, start + n)
            futures.append((producer.send(topic, key=f"device-{i % 97}".encode(), value=value), poisoned))
            if pace_s and i % 1000 == 999:
                time.sleep(pace_s)
        producer.flush(timeout=120)
        good, bad = set(), set()
        for fut, poisoned in futures:
            md = fut.get(timeout=60)
            (bad if poisoned else good).add((md.partition, md.offset))
        return good, bad
    finally:
        producer.close(timeout=10)


def end_offsets(coords: Iterable[Coord]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for p, o in coords:
        ends[p] = max(ends.get(p, 0), o + 1)
    return ends


def consumer_env(service_env: dict[str, str], topic: str, dlq: str, lake_url: str, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CONSUMER_", "LAKE_URL"))}
    env |= service_env | {
        "KAFKA_EVENTS_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": dlq,
        "KAFKA_CONSUMER_GROUP": f"g-{topic}",
        "LAKE_URL": lake_url,
        "CONSUMER_FLUSH_RECORDS": "2000",
        "CONSUMER_FLUSH_AGE_S": "1",
        "CONSUMER_METRICS_PORT": "0",
        "CONSUMER_LOG_INTERVAL_S": "5",
        "CONSUMER_ORPHAN_GRACE_S": "600",
        "CONSUMER_RETRY_MAX_BACKOFF_S": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env |= {k.upper(): str(v) for k, v in extra.items()}
    return env


def start_consumer(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen:
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, "-m", "eventpipe_cli.main", "consumer", *args],
                            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_landed(lake: LakeStore, ends: dict[int, int], timeout: float, procs: Iterable[subprocess.Popen] = ()) -> None:
    """Until each partition's committed end offset reached ``ends``."""
    deadline = time.monotonic() + timeout
    procs = list(procs)
    while True:
        done = {p: (last_partition_commit(lake, p) or _NONE).end_offset for p in ends}
        if all(done[p] >= e for p, e in ends.items()):
            return
        dead = [pr.returncode for pr in procs if pr.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"not landed: committed {done}, wanted {ends}, exited consumers {dead}")
        time.sleep(0.5)


class _None:
    end_offset = -1


_NONE = _None()


def read_rows(lake: LakeStore, key: str) -> Any:
    return pq.read_table(io.BytesIO(lake.get(key)))


def dlq_coordinates(settings: Settings, dlq_topic: str) -> tuple[Counter, dict[Coord, str]]:
    """(records per source coordinate, reason per coordinate) of a DLQ topic."""
    reader = DlqReader(settings.model_copy(update={"kafka_dlq_topic": dlq_topic}))
    counts: Counter = Counter()
    reasons: dict[Coord, str] = {}
    try:
        for _rec, letter in reader:
            assert letter is not None, "a DLQ record without dead-letter headers"
            counts[(letter.partition, letter.offset)] += 1
            reasons[(letter.partition, letter.offset)] = letter.reason
    finally:
        reader.close()
    return counts, reasons


def assert_exactly_once(lake: LakeStore, topic: str, good: set[Coord], bad: set[Coord] = frozenset()) -> list[CommitRecord]:
    """The union of committed rows and committed dead-letter offsets is every produced coordinate, once."""
    records = list(iter_commit_records(lake))
    assert records, "nothing committed"
    by_part: dict[int, list[CommitRecord]] = {}
    for r in records:
        assert r.topic == topic
        by_part.setdefault(r.kafka_partition, []).append(r)
    landed: Counter = Counter()
    dead: Counter = Counter()
    for p, recs in by_part.items():
        for i, r in enumerate(recs):
            assert r.seq == i, f"partition {p}: seq gap at {i}"
            if i:
                assert r.start_offset == recs[i - 1].end_offset, f"partition {p}: seq {i} does not start at the previous end"
            offsets_in_record: list[int] = []
            for obj in r.objects:
                assert f"event_date={obj.event_date}/event_hour={obj.event_hour}/" in obj.key
                name = parse_object_key(obj.key)
                assert name is not None
                assert (name.kafka_partition, name.start_offset, name.end_offset) == (p, r.start_offset, r.end_offset)
                table = read_rows(lake, obj.key)
                assert table.num_rows == obj.rows
                parts = table.column("kafka_partition").to_pylist()
                offs = table.column("kafka_offset").to_pylist()
                assert set(parts) == {p}
                hours = {t.strftime("%Y-%m-%d %H") for t in table.column("event_time").to_pylist()}
                assert hours == {f"{obj.event_date} {obj.event_hour}"}, "rows must sit in their event hour"
                offsets_in_record += offs
            dead_offs = r.extra.get("dead_lettered_offsets", [])
            assert len(dead_offs) == r.dead_lettered
            assert r.records == len(offsets_in_record) + len(dead_offs)
            for o in offsets_in_record + dead_offs:
                assert r.start_offset <= o < r.end_offset
            landed.update((p, o) for o in offsets_in_record)
            dead.update((p, o) for o in dead_offs)
    dup = [c for c, n in (landed + dead).items() if n > 1]
    assert not dup, f"{len(dup)} coordinates committed more than once, e.g. {dup[:5]}"
    missing = (good | bad) - set(landed) - set(dead)
    assert not missing, f"{len(missing)} produced coordinates never committed, e.g. {sorted(missing)[:5]}"
    assert set(landed) == good, f"unexpected landed rows: {sorted(set(landed) - good)[:5]}"
    assert set(dead) == bad, f"wrong dead letters: {sorted(set(dead) ^ bad)[:5]}"
    return records


def landed_keys(lake: LakeStore) -> set[str]:
    return {k for k in lake.list("raw/events/") if parse_object_key(k) is not None}


def committed_keys(records: Iterable[CommitRecord]) -> set[str]:
    return {o.key for r in records for o in r.objects}


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
