"""Collector throughput and latency vs a bare librdkafka (confluent-kafka) producer of the same events.

Starts its own embedded broker (free port), a temporary SQLite metadata store with one key, and the
collector as a separate process (``eventpipe collector --workers N``, rate limits lifted), then in
the same run, for each batch size:

1. **collector, closed loop**: ``--concurrency`` keep-alive connections POST pre-encoded /2/httpapi
   bodies back to back for ``--seconds`` (a minimal asyncio HTTP/1.1 client, so the load generator
   costs little CPU on the same machine) → events/s, p50/p99;
2. **bare librdkafka**: the same envelopes (as the collector builds them) produced by one
   confluent-kafka producer (acks=all, lz4, idempotent), ``--concurrency`` senders each waiting for
   every delivery report of its batch → events/s, p50/p99 per batch;
2b. **bare librdkafka, fire-and-forget**: the same envelopes, one flush at the end (the producer's
   own ceiling; no request waits for its acks) → events/s;
3. **collector, open loop** at half the target rate (``--target`` × bare / 2) and at half its own
   closed-loop rate: requests sent on a fixed schedule → achieved rate, p50/p99 (the latency SLO).

Prints the collector/bare ratio. The machine is shared: compare ratios of one run, not runs.

    .venv/bin/python bench/collector.py [--seconds 5] [--concurrency 16] [--sizes 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

# This file is named like the package it measures: keep its own directory off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from embedded.broker import EmbeddedBroker, ensure_topics, free_port, wait_for_tcp  # noqa: E402
from eventpipe_core.event_model import encode_envelope, event_key, make_envelope  # noqa: E402
from eventpipe_core.kafka_clients import librdkafka_producer_config  # noqa: E402
from eventpipe_core.settings import Settings, load_settings  # noqa: E402

UNLIMITED = {"COLLECTOR_V2_EPS": "1e9", "COLLECTOR_BATCH_EPS": "1e9", "COLLECTOR_KEY_RPS": "1e9"}
BODIES = 64  # distinct request bodies per size, cycled


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


class Conn:
    """One keep-alive HTTP/1.1 connection sending pre-built requests (cheap on the client side)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def request_bytes(host: str, port: int, key: str, size: int) -> list[bytes]:
    out = []
    for b in range(BODIES):
        body = json.dumps({"api_key": key, "events": make_events(size, b)}, separators=(",", ":")).encode()
        out.append(b"POST /2/httpapi HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, len(body), body))
    return out


async def closed_loop(host: str, port: int, raws: list[bytes], size: int, seconds: float,
                      concurrency: int) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    events = errors = 0
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal events, errors
        conn = Conn(host, port)
        i = w
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                status = await conn.request(raws[i % len(raws)])
                latencies.append(time.perf_counter() - t0)
                i += concurrency
                if status == 200:
                    events += size
                else:
                    errors += 1
        finally:
            conn.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return int(events / (time.monotonic() - t0)), latencies, errors


async def open_loop(host: str, port: int, raws: list[bytes], size: int, seconds: float,
                    rate_eps: float) -> tuple[int, list[float], int]:
    """Requests on a fixed schedule (latency measured from the scheduled send time)."""
    interval = size / rate_eps
    n = max(1, int(seconds / interval))
    latencies: list[float] = []
    idle: list[Conn] = []
    ok = errors = 0
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal ok, errors
        scheduled = start + i * interval
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        conn = idle.pop() if idle else Conn(host, port)
        status = await conn.request(raws[i % len(raws)])
        latencies.append(time.perf_counter() - scheduled)
        idle.append(conn)
        if status == 200:
            ok += size
        else:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    for c in idle:
        c.close()
    return int(ok / elapsed), latencies, errors


SERVER_HISTOGRAMS = {"request": "eventpipe_collector_request_latency_seconds",
                     "produce": "eventpipe_collector_produce_latency_seconds",
                     "loop lag": "eventpipe_collector_loop_lag_seconds", "GC pause": "eventpipe_collector_gc_pause_seconds"}


def scrape(host: str, port: int, workers: int) -> dict[str, dict[str, dict[float, float]]]:
    """Per worker (named by /healthz on the same keep-alive connection): cumulative bucket counts of
    the collector's own histograms (labels summed)."""
    import http.client

    from prometheus_client.parser import text_string_to_metric_families

    seen: dict[str, dict[str, dict[float, float]]] = {}
    for _ in range(workers * 20):
        if len(seen) >= workers:
            break
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            worker = json.loads(conn.getresponse().read()).get("worker", "?")
            if worker in seen:
                continue
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        hists: dict[str, dict[float, float]] = {}
        for fam in text_string_to_metric_families(text):
            for label, name in SERVER_HISTOGRAMS.items():
                if fam.name == name.removesuffix("_seconds") or fam.name == name:
                    for sample in fam.samples:
                        if sample.name.endswith("_bucket"):
                            le = float(sample.labels["le"])
                            hists.setdefault(label, {})[le] = hists.get(label, {}).get(le, 0.0) + sample.value
        seen[worker] = hists
    return seen


def server_quantiles(before: dict, after: dict, q: float = 0.99) -> str:
    """'request p99 ≤ 25 ms, …' from the bucket counts added between two scrapes (all workers)."""
    parts = []
    for label in SERVER_HISTOGRAMS:
        buckets: dict[float, float] = {}
        for worker, hists in after.items():
            for le, count in hists.get(label, {}).items():
                buckets[le] = buckets.get(le, 0.0) + count - before.get(worker, {}).get(label, {}).get(le, 0.0)
        total = buckets.get(float("inf"), 0.0)
        if not total:
            parts.append(f"{label}: none")
            continue
        bound = next(le for le in sorted(buckets) if buckets[le] >= q * total)
        parts.append(f"{label} p{q * 100:.0f} ≤ {bound * 1000:g} ms (n={total:.0f})")
    return ", ".join(parts)


def bare_envelopes(size: int) -> list[list[tuple[bytes | None, bytes]]]:
    batches = []
    for b in range(BODIES):
        received = int(time.time() * 1000)
        upload = str(uuid.uuid4())
        batches.append([(event_key(e), encode_envelope(make_envelope(
            e, project="bench", received_at_ms=received, client_ip="127.0.0.1", upload_id=upload)))
            for e in make_events(size, b)])
    return batches


def run_bare(settings: Settings, size: int, seconds: float, concurrency: int) -> tuple[int, list[float]]:
    """The same envelopes straight into Kafka with librdkafka: the ceiling the collector is measured against."""
    from confluent_kafka import Producer

    producer = Producer(librdkafka_producer_config(settings, client_id="bench-bare"))
    batches = bare_envelopes(size)
    latencies: list[float] = []
    counts = [0] * concurrency
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    def worker(w: int) -> None:
        i = w
        while time.monotonic() < deadline:
            batch = batches[i % len(batches)]
            i += concurrency
            done = threading.Event()
            left = [len(batch)]

            def report(err: Any, _msg: Any, left: list[int] = left, done: threading.Event = done) -> None:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

            t0 = time.perf_counter()
            for key, value in batch:
                while True:
                    try:
                        producer.produce(settings.kafka_events_topic, value, key, on_delivery=report)
                        break
                    except BufferError:
                        time.sleep(0.001)
            done.wait(60)
            with lock:
                latencies.append(time.perf_counter() - t0)
            counts[w] += size

    polling = threading.Thread(target=poller, daemon=True)
    polling.start()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    stop.set()
    polling.join()
    producer.flush(10)
    return int(sum(counts) / elapsed), latencies


def run_bare_open(settings: Settings, size: int, seconds: float, rate_eps: float, nagle: bool = False) -> list[float]:
    """The same envelopes, a batch on the collector's fixed schedule, each batch's latency from its
    scheduled time to its last delivery report: the broker's (and the machine's) own p99 at that rate.
    ``nagle=True`` turns Nagle's algorithm back on (librdkafka's default) to show what it costs."""
    from confluent_kafka import Producer

    producer = Producer(librdkafka_producer_config(settings, client_id="bench-bare-open",
                                                   **{"socket.nagle.disable": not nagle}))
    batches = bare_envelopes(size)
    for key, value in batches[0]:  # connected and the topic known before the clock starts
        producer.produce(settings.kafka_events_topic, value, key)
    producer.flush(30)
    interval = size / rate_eps
    latencies: list[float] = []
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    polling = threading.Thread(target=poller, daemon=True)
    polling.start()
    start = time.perf_counter() + 0.05
    for i in range(max(1, int(seconds / interval))):
        scheduled = start + i * interval
        time.sleep(max(0.0, scheduled - time.perf_counter()))
        left = [size]

        def report(err: Any, _msg: Any, left: list[int] = left, scheduled: float = scheduled) -> None:
            left[0] -= 1
            if left[0] == 0:
                latencies.append(time.perf_counter() - scheduled)

        for key, value in batches[i % len(batches)]:
            producer.produce(settings.kafka_events_topic, value, key, on_delivery=report)
    producer.flush(30)
    stop.set()
    polling.join()
    return latencies


def run_bare_stream(settings: Settings, size: int, seconds: float) -> int:
    """The same envelopes fire-and-forget (one flush at the end): librdkafka's own ceiling here."""
    from confluent_kafka import Producer

    producer = Producer(librdkafka_producer_config(settings, client_id="bench-stream"))
    batches = bare_envelopes(size)
    n, i = 0, 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for key, value in batches[i % len(batches)]:
            while True:
                try:
                    producer.produce(settings.kafka_events_topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
        n += size
        i += 1
    producer.flush(60)
    return int(n / (time.monotonic() - t0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sizes", default="100")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.1, help="target collector/bare ratio (issue 17)")
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
        host, port = "127.0.0.1", free_port()
        env = os.environ | UNLIMITED | {
            "EVENTPIPE_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "METADATA_DB_URL": settings.metadata_db_url or "", "COLLECTOR_METADATA_TTL_S": "60",
        }
        log = open(home / "collector.log", "wb")  # noqa: SIM115 - lives as long as the child
        server = subprocess.Popen(
            [sys.executable, "-m", "eventpipe_cli.main", "collector", "--host", host, "--port", str(port),
             "--workers", str(args.workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for_tcp(host, port, 60, server)
            warm = request_bytes(host, port, key, 10)
            asyncio.run(closed_loop(host, port, warm, 10, 2.0, 4))  # warm-up: every worker connected, caches filled
            print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            print(f"collector ({args.workers} workers) vs bare librdkafka producer — {args.concurrency} concurrent "
                  f"senders, {args.seconds:.0f}s per run, broker {broker.bootstrap} (Tansu, memory); shared machine")
            print(f"{'batch':>6} | {'collector ev/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} | "
                  f"{'bare ev/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'ratio':>5}")
            open_runs = []
            for size in sizes:
                raws = request_bytes(host, port, key, size)
                c_eps, c_lat, c_err = asyncio.run(closed_loop(host, port, raws, size, args.seconds, args.concurrency))
                b_eps, b_lat = run_bare(settings, size, args.seconds, args.concurrency)
                print(f"{size:>6} | {c_eps:>14,} {percentile(c_lat, .5) * 1000:>8.1f} {percentile(c_lat, .99) * 1000:>8.1f} "
                      f"{c_err:>6} | {b_eps:>10,} {percentile(b_lat, .5) * 1000:>8.1f} {percentile(b_lat, .99) * 1000:>8.1f} | "
                      f"{c_eps / b_eps if b_eps else float('nan'):>5.3f}")
                s_eps = run_bare_stream(settings, size, args.seconds)
                print(f"{'':>6}   bare librdkafka fire-and-forget (one flush at the end): {s_eps:,} ev/s — "
                      f"collector/streaming ratio {c_eps / s_eps if s_eps else float('nan'):.3f}")
                open_runs.append((size, raws, b_eps, c_eps))
            print("open loop (fixed schedule; latency from the scheduled send):")
            for size, raws, b_eps, c_eps in open_runs:
                for label, rate in ((f"half the target ({args.target}x bare / 2)", args.target * b_eps / 2),
                                    ("half the closed-loop rate", c_eps / 2)):
                    before = scrape(host, port, args.workers)
                    got, lat, err = asyncio.run(open_loop(host, port, raws, size, args.seconds, rate))
                    after = scrape(host, port, args.workers)
                    print(f"  batch {size}, {label}: asked {rate:,.0f} ev/s, achieved {got:,} ev/s, "
                          f"p50 {percentile(lat, .5) * 1000:.1f} ms, p99 {percentile(lat, .99) * 1000:.1f} ms, errors {err}")
                    print(f"    server side ({len(after)} workers): {server_quantiles(before, after)}")
                    for nagle in (False, True):
                        bare = run_bare_open(settings, size, args.seconds, rate, nagle=nagle)
                        print(f"    bare librdkafka on the same schedule, Nagle {'on (librdkafka default)' if nagle else 'off'}: "
                              f"p50 {percentile(bare, .5) * 1000:.1f} ms, p99 {percentile(bare, .99) * 1000:.1f} ms — "
                              f"load average {os.getloadavg()[0]:.1f}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            log.close()
            broker.stop()


if __name__ == "__main__":
    main()
