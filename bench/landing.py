"""Landing throughput vs the raw kafka-python poll rate of the same topic, and lake bytes per event.

Starts its own embedded broker (free port) and a temporary file:// lake, produces N realistic
envelopes, then in the same run: (1) polls the whole topic with a bare kafka-python consumer,
(2) lands it with the ingest consumer (manual assignment, so neither side pays a group join).

    .venv/bin/python bench/landing.py [--events 200000] [--partitions 4] [--flush-records 25000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from embedded.broker import EmbeddedBroker, ensure_topics, free_port
from eventpipe_core.kafka_clients import consumer_config, producer_config
from eventpipe_core.lake_catalog import iter_commit_records, last_partition_commit
from eventpipe_core.lake_store import open_lake
from eventpipe_core.settings import Settings, load_settings
from ingest_consumer.consumer import LandingConsumer

BASE_MS = 1_767_225_600_000


def realistic_envelope(i: int, rng: random.Random) -> bytes:
    """Shaped like the collector's output for a typical SDK event."""
    device = f"{rng.randrange(50_000):08x}-3f1c-4b7e-9d2a-{rng.randrange(10**12):012d}"
    t = BASE_MS + i * 50
    event = {
        "insert_id": f"{device}-{i}", "event_type": rng.choice(["page_view", "button_click", "purchase", "signup"]),
        "device_id": device, "user_id": f"user-{rng.randrange(20_000)}", "time": t, "session_id": t - rng.randrange(600_000),
        "event_properties": {"path": f"/p/{rng.randrange(500)}", "referrer": "https://example.com/", "plan": "pro"},
        "user_properties": {"$set": {"cohort": rng.choice(["a", "b", "c"])}},
        "platform": "Web", "os_name": "Chrome", "os_version": "126", "device_model": "Mac", "language": "en-US",
        "country": "Germany", "city": "Berlin", "library": "amplitude-ts/2.11.1", "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    }
    env = {"v": 1, "event": event, "project": "demo", "received_at": t + 120, "client_ip": "203.0.113.9",
           "upload_id": f"{rng.randrange(10**9):09d}", "plan_violations": []}
    return json.dumps(env, separators=(",", ":")).encode()


def produce(settings: Settings, n: int) -> tuple[dict[int, int], int]:
    from kafka import KafkaProducer

    rng = random.Random(7)
    producer = KafkaProducer(**producer_config(settings, linger_ms=20, batch_size=512 * 1024, max_block_ms=60_000))
    futures, raw_bytes = [], 0
    for i in range(n):
        value = realistic_envelope(i, rng)
        raw_bytes += len(value)
        futures.append(producer.send(settings.kafka_events_topic, key=str(i % 1000).encode(), value=value))
    producer.flush(timeout=300)
    ends: dict[int, int] = {}
    for f in futures:
        md = f.get(timeout=60)
        ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    producer.close()
    return ends, raw_bytes


def raw_poll_rate(settings: Settings, n: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_config(settings, group_id=None, max_poll_records=5000))
    tps = [TopicPartition(settings.kafka_events_topic, p) for p in range(settings.kafka_events_partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, t0 = 0, time.perf_counter()
    while seen < n:
        for records in consumer.poll(timeout_ms=1000).values():
            seen += len(records)
    elapsed = time.perf_counter() - t0
    consumer.close()
    return n / elapsed


def landing_rate(settings: Settings, ends: dict[int, int]) -> tuple[float, int, int]:
    lake = open_lake(settings)
    landing = LandingConsumer(settings, lake=lake)
    t0 = time.perf_counter()
    thread = threading.Thread(target=landing.run, daemon=True)
    thread.start()
    while not all((c := last_partition_commit(lake, p)) is not None and c.end_offset >= e for p, e in ends.items()):
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    landing.stop()
    thread.join(30)
    records = list(iter_commit_records(lake))
    lake_bytes = sum(len(lake.get(o.key)) for r in records for o in r.objects)
    return sum(ends.values()) / elapsed, lake_bytes, len(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--flush-records", type=int, default=25_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(host="127.0.0.1", port=free_port(), log_path=Path(tmp) / "broker.log").start()
        try:
            settings = load_settings(
                eventpipe_home=Path(tmp), kafka_bootstrap_servers=broker.bootstrap, lake_url=(Path(tmp) / "lake").as_uri(),
                kafka_events_partitions=args.partitions, consumer_assign_partitions=",".join(map(str, range(args.partitions))),
                consumer_flush_records=args.flush_records, consumer_flush_age_s=2.0, consumer_log_interval_s=3600,
                consumer_metrics_port=0,
            )
            ensure_topics(settings, broker.bootstrap)
            t0 = time.perf_counter()
            ends, raw_bytes = produce(settings, args.events)
            took = time.perf_counter() - t0
            print(f"produced {args.events} events in {took:.1f}s ({raw_bytes / args.events:.0f} B JSON/event)")
            raw = raw_poll_rate(settings, args.events)
            landed, lake_bytes, batches = landing_rate(settings, ends)
        finally:
            broker.stop()
    print(f"raw kafka-python poll : {raw:10.0f} events/s")
    print(f"landed (committed)    : {landed:10.0f} events/s   ratio {landed / raw:.2f} of raw poll  ({batches} batches)")
    print(f"lake bytes per event  : {lake_bytes / args.events:10.1f} B   vs raw JSON {raw_bytes / args.events:.1f} B"
          f"   ({lake_bytes / raw_bytes:.2%})")


if __name__ == "__main__":
    main()
