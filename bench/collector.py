"""Collector throughput and latency vs a bare kafka-python producer writing the same envelopes.

Starts its own embedded broker (free port), a temporary SQLite metadata store with one key, and the
collector as a separate process (uvicorn, one worker), then in the same run, for batches of 10, 100
and 1000 events: (1) POSTs them to /2/httpapi from ``--concurrency`` concurrent clients for
``--seconds``; (2) produces the same envelopes with a bare KafkaProducer (acks=all), the same number
of concurrent senders each waiting for every ack of its batch. Prints events/s, p50/p99 per
request (per batch for the bare producer) and the collector/bare ratio.

    .venv/bin/python bench/collector.py [--seconds 5] [--concurrency 8] [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

# This file is named like the package it measures: keep its own directory off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from embedded.broker import EmbeddedBroker, ensure_topics, free_port, wait_for_tcp  # noqa: E402
from eventpipe_core.event_model import encode_envelope, event_key, make_envelope  # noqa: E402
from eventpipe_core.kafka_clients import producer_config  # noqa: E402
from eventpipe_core.settings import Settings, load_settings  # noqa: E402

UNLIMITED = {"COLLECTOR_V2_EPS": "1e9", "COLLECTOR_BATCH_EPS": "1e9", "COLLECTOR_KEY_RPS": "1e9"}


def make_events(n: int, seq: int) -> list[dict[str, Any]]:
    """A batch shaped like a web SDK upload: distinct devices, a few properties."""
    now = int(time.time() * 1000)
    return [
        {
            "device_id": f"bench-device-{seq % 5000:05d}-{i}", "user_id": f"bench-user-{(seq * 7 + i) % 20000:05d}",
            "event_type": ("page_view", "button_click", "purchase")[i % 3], "time": now + i,
            "insert_id": f"{seq}-{i}-{uuid.uuid4().hex[:8]}",
            "event_properties": {"path": f"/p/{i % 500}", "referrer": "https://example.com/", "plan": "pro"},
            "platform": "Web", "os_name": "Chrome", "os_version": "126", "language": "en-US", "ip": "$remote",
            "library": "amplitude-ts/2.11.1",
        }
        for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_collector(url: str, key: str, size: int, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    events = errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal events, errors
            seq = w * 1_000_000
            while time.monotonic() < deadline:
                body = {"api_key": key, "events": make_events(size, seq)}
                seq += 1
                t0 = time.perf_counter()
                r = await client.post("/2/httpapi", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    events += size
                else:
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - t0
    return int(events / elapsed), latencies, errors


def run_bare(settings: Settings, size: int, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    """The same envelopes, straight into Kafka: the ceiling the collector is measured against."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(settings))
    latencies: list[float] = []
    counts = [0] * concurrency
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(w: int) -> None:
        seq = w * 1_000_000
        while time.monotonic() < deadline:
            received = int(time.time() * 1000)
            upload = str(uuid.uuid4())
            batch = [encode_envelope(make_envelope(e, project="bench", received_at_ms=received, client_ip="127.0.0.1",
                                                   upload_id=upload)) for e in make_events(size, seq)]
            keys = [event_key(e) for e in make_events(size, seq)]
            seq += 1
            t0 = time.perf_counter()
            futures = [producer.send(settings.kafka_events_topic, key=k, value=v) for k, v in zip(keys, batch, strict=True)]
            for f in futures:
                f.get(timeout=60)
            with lock:
                latencies.append(time.perf_counter() - t0)
            counts[w] += size

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    producer.close()
    return int(sum(counts) / elapsed), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        home = Path(tmp)
        broker = EmbeddedBroker(host="127.0.0.1", port=free_port(), log_path=home / "broker.log").start()
        settings = load_settings(eventpipe_home=home, kafka_bootstrap_servers=broker.bootstrap,
                                 metadata_db_url=f"sqlite:///{home / 'metadata.db'}")
        ensure_topics(settings, broker.bootstrap)
        from eventpipe_core.metadata import get_metadata_store

        store = get_metadata_store(settings)
        key = store.create_key("bench")
        store.dispose()
        port = free_port()
        env = os.environ | UNLIMITED | {
            "EVENTPIPE_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "METADATA_DB_URL": settings.metadata_db_url or "",
        }
        code = ("import uvicorn; uvicorn.run('collector.app:create_app', factory=True, host='127.0.0.1', "
                f"port={port}, log_level='warning', access_log=False, proxy_headers=False)")
        log = open(home / "collector.log", "wb")  # noqa: SIM115 - lives as long as the child
        server = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_tcp("127.0.0.1", port, 60, server)
            url = f"http://127.0.0.1:{port}"
            asyncio.run(run_collector(url, key, 10, 1.0, 2))  # warm-up: producer connected, caches filled
            print(f"collector vs bare kafka-python producer — {args.concurrency} concurrent senders, "
                  f"{args.seconds:.0f}s per run, broker {broker.bootstrap} (Tansu, memory)")
            print(f"{'batch':>6} | {'collector ev/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} | "
                  f"{'bare ev/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'ratio':>5}")
            for size in sizes:
                c_eps, c_lat, c_err = asyncio.run(run_collector(url, key, size, args.seconds, args.concurrency))
                b_eps, b_lat = run_bare(settings, size, args.seconds, args.concurrency)
                print(f"{size:>6} | {c_eps:>14,} {percentile(c_lat, .5) * 1000:>8.1f} {percentile(c_lat, .99) * 1000:>8.1f} "
                      f"{c_err:>6} | {b_eps:>10,} {percentile(b_lat, .5) * 1000:>8.1f} {percentile(b_lat, .99) * 1000:>8.1f} | "
                      f"{c_eps / b_eps if b_eps else float('nan'):>5.2f}")
        finally:
            server.terminate()
            server.wait(20)
            log.close()
            broker.stop()


if __name__ == "__main__":
    main()
