"""End to end on the real broker: produce -> `eventpipe consumer` -> committed Parquet on the lake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from eventpipe_core.event_model import RAW_EVENT_SCHEMA
from eventpipe_core.lake_catalog import committed_objects
from eventpipe_core.lake_store import LocalLakeStore
from eventpipe_core.settings import Settings
from ingest_consumer.dlq import H_REPLAYED_FROM
from ingest_consumer.partitioner import new_attempt_id, object_key
from tests.ingest_support import (
    POISON,
    ROOT,
    assert_exactly_once,
    consumer_env,
    create_topics,
    dlq_coordinates,
    end_offsets,
    log_text,
    produce,
    read_rows,
    start_consumer,
    stop,
    wait_landed,
)


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "eventpipe_cli.main", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_lands_every_record_exactly_once_and_lists_committed_files(
    settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> None:
    topic, dlq = create_topics(settings)
    lake = LocalLakeStore(tmp_path / "lake")
    good, bad = produce(settings, topic, 20_000, hours=3)
    assert len({p for p, _ in good}) == 4 and not bad
    env = consumer_env(service_env, topic, dlq, lake.url)
    log = tmp_path / "consumer.log"
    proc = start_consumer(env, log)
    try:
        wait_landed(lake, end_offsets(good), timeout=120, procs=[proc])
    finally:
        rc = stop(proc)
    assert rc == 0, log_text(log)[-3000:]
    assert "leav" in log_text(log) or "consumer closed" in log_text(log)

    records = assert_exactly_once(lake, topic, good)
    assert len(records) >= 8  # 20k records at 2000 per batch: many batches per partition
    # typed schema, JSON property maps, every hour of the stream present
    some = read_rows(lake, records[0].objects[0].key)
    assert some.schema.equals(RAW_EVENT_SCHEMA, check_metadata=False)
    assert some.schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert some.column("event_properties")[0].as_py().startswith('{"n":')
    assert {o.event_hour for o in committed_objects(lake)} == {"00", "01", "02"}
    assert sum(r.rows for r in records) == 20_000
    assert all(r.min_event_time_ms is not None and r.min_event_time_ms <= r.max_event_time_ms for r in records)

    # an uncommitted leftover (a crashed attempt's object) is never listed
    orphan = object_key("2026-01-01", "01", 0, 0, 5, new_attempt_id())
    lake.put(orphan, b"partial")
    listed = _cli(env, "lake", "files").split()
    assert sorted(listed) == sorted(lake.uri(o.key) for o in committed_objects(lake))
    assert lake.uri(orphan) not in listed and all(u.startswith("file:///") for u in listed)
    hour = _cli(env, "lake", "files", "--date", "2026-01-01", "--hour", "1").split()
    assert hour and all("event_date=2026-01-01/event_hour=01/" in u for u in hour)
    assert set(hour) < set(listed)
    assert "deleted 1 uncommitted" in _cli(env, "lake", "cleanup", "--grace-s", "0")
    assert not lake.exists(orphan)
    assert sorted(_cli(env, "lake", "files").split()) == sorted(listed)


def test_poisoned_records_go_to_the_dlq_and_good_ones_land(
    settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> None:
    topic, dlq = create_topics(settings)
    lake = LocalLakeStore(tmp_path / "lake")
    good, bad = produce(settings, topic, 6000, poison_every=50)
    assert len(bad) == 120
    env = consumer_env(service_env, topic, dlq, lake.url)
    log = tmp_path / "consumer.log"
    proc = start_consumer(env, log)
    try:
        wait_landed(lake, end_offsets(good | bad), timeout=120, procs=[proc])
    finally:
        assert stop(proc) == 0, log_text(log)[-3000:]
    records = assert_exactly_once(lake, topic, good, bad)
    assert sum(r.dead_lettered for r in records) == 120

    counts, reasons = dlq_coordinates(settings, dlq)
    assert set(counts) == bad  # every poisoned record is on the DLQ (at least once), nothing else
    assert {r.split(":")[0] for r in reasons.values()} >= {"undecodable JSON", "event.insert_id missing or not a string"}
    assert any("unsupported envelope version" in r for r in reasons.values())

    # replay: the original bytes go back to the events topic, once per source record
    dlq_env = env | {"KAFKA_DLQ_TOPIC": dlq}
    stats = _cli(dlq_env, "dlq", "stats")
    assert "120 distinct source records" in stats and "undecodable JSON" in stats
    out = _cli(dlq_env, "dlq", "replay", "--dry-run")
    assert "would re-submit 120" in out and "120 distinct source records" in out
    out = _cli(dlq_env, "dlq", "replay")
    assert "re-submitted 120" in out
    assert "re-submitted 0" in _cli(dlq_env, "dlq", "replay")  # progress kept: nothing new
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(tps)
    ends = end_offsets(good | bad)
    for tp in tps:
        consumer.seek(tp, ends.get(tp.partition, 0))
    replayed = [m for m in consumer]
    consumer.close()
    assert len(replayed) == 120
    assert all(dict(m.headers)[H_REPLAYED_FROM].startswith(topic.encode()) for m in replayed)
    assert {m.value for m in replayed} == set(POISON)
