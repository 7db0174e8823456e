"""Landing throughput vs a bare librdkafka (confluent-kafka) consumer of the same topic; RSS; lake bytes/event.

Starts its own embedded broker (free port) and a temporary file:// lake, produces N realistic
envelopes, then in the same run:

1. a bare confluent-kafka consumer subscribes (group join included) and reads the whole topic;
2. ``eventpipe consumer`` (a separate process, default flush sizes — ``CONSUMER_FLUSH_RECORDS``
   100k, ``CONSUMER_FLUSH_BYTES`` 64 MiB — but ``--flush-age`` for the tail) joins its own group
   and lands the topic; the clock starts when it logs that it is joining (after Python's imports,
   as for the bare consumer) and stops when every partition's lake commit reached the end.
   Its peak RSS (VmHWM) is printed.

    .venv/bin/python bench/landing.py [--events 400000] [--partitions 4] [--flush-age 2]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedded.broker import EmbeddedBroker, ensure_topics, free_port
from eventpipe_core.event_model import encode_envelope
from eventpipe_core.kafka_clients import librdkafka_consumer_config, librdkafka_producer_config
from eventpipe_core.lake_catalog import iter_commit_records, last_partition_commit
from eventpipe_core.lake_store import open_lake
from eventpipe_core.settings import Settings, load_settings

BASE_MS = 1_767_225_600_000
ROOT = Path(__file__).resolve().parent.parent


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
    return encode_envelope(env)  # as the collector encodes it (keys sorted)


def produce(settings: Settings, n: int) -> tuple[dict[int, int], int]:
    from confluent_kafka import Producer

    rng = random.Random(7)
    producer = Producer(librdkafka_producer_config(settings, client_id="bench-landing", timeout_ms=120_000))
    ends: dict[int, int] = {}
    raw_bytes = 0

    def report(err, msg) -> None:  # noqa: ANN001
        if err is None:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for i in range(n):
        value = realistic_envelope(i, rng)
        raw_bytes += len(value)
        while True:
            try:
                producer.produce(settings.kafka_events_topic, value, str(i % 1000).encode(), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(300) == 0
    return ends, raw_bytes


def bare_rate(settings: Settings, n: int) -> float:
    """Subscribe (group join included) and read the whole topic with librdkafka."""
    from confluent_kafka import Consumer

    t0 = time.perf_counter()
    consumer = Consumer(librdkafka_consumer_config(settings, client_id="bench-bare") | {"group.id": "bench-bare"})
    consumer.subscribe([settings.kafka_events_topic])
    seen = 0
    while seen < n:
        for m in consumer.consume(5000, 1.0):
            if m.error() is None:
                seen += 1
    elapsed = time.perf_counter() - t0
    consumer.close()
    return n / elapsed


def landing_rate(settings: Settings, home: Path, ends: dict[int, int], flush_age: float) -> tuple[float, int, int, int]:
    lake = open_lake(settings)
    log_path = home / "consumer.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CONSUMER_", "LAKE_URL"))} | {
        "EVENTPIPE_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_CONSUMER_GROUP": "bench-landing", "LAKE_URL": settings.lake_url or "", "CONSUMER_METRICS_PORT": "0",
        "CONSUMER_FLUSH_AGE_S": str(flush_age), "CONSUMER_LOG_INTERVAL_S": "3600", "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "eventpipe_cli.main", "consumer"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        while "joining group" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.01)
        t0 = time.perf_counter()
        while not all((c := last_partition_commit(lake, p)) is not None and c.end_offset >= e for p, e in ends.items()):
            assert proc.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    records = list(iter_commit_records(lake))
    lake_bytes = sum(len(lake.get(o.key)) for r in records for o in r.objects)
    return sum(ends.values()) / elapsed, lake_bytes, len(records), rss_kb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--flush-age", type=float, default=2.0, help="CONSUMER_FLUSH_AGE_S (the tail of the topic)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-landing-") as tmp:
        home = Path(tmp)
        broker = EmbeddedBroker(host="127.0.0.1", port=free_port(), log_path=home / "broker.log").start()
        try:
            settings = load_settings(eventpipe_home=home, kafka_bootstrap_servers=broker.bootstrap,
                                     lake_url=(home / "lake").as_uri(), kafka_events_partitions=args.partitions)
            ensure_topics(settings, broker.bootstrap)
            t0 = time.perf_counter()
            ends, raw_bytes = produce(settings, args.events)
            print(f"produced {args.events} events in {time.perf_counter() - t0:.1f}s "
                  f"({raw_bytes / args.events:.0f} B JSON/event); shared machine: compare the ratio")
            raw = bare_rate(settings, args.events)
            landed, lake_bytes, batches, rss_kb = landing_rate(settings, home, ends, args.flush_age)
        finally:
            broker.stop()
    print(f"load average                             : {' '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine)")
    print(f"bare librdkafka consumer (join included) : {raw:10.0f} events/s")
    print(f"landed (committed, join included)        : {landed:10.0f} events/s   ratio {landed / raw:.2f}  ({batches} batches)")
    print(f"landing consumer peak RSS                : {rss_kb / 1024:10.0f} MiB (default flush sizes)")
    print(f"lake bytes per event                     : {lake_bytes / args.events:10.1f} B   vs raw JSON "
          f"{raw_bytes / args.events:.1f} B ({lake_bytes / raw_bytes:.2%})")


if __name__ == "__main__":
    main()
