"""End-to-end freshness and throughput through the whole embedded stack (issue 17: ≥ 10k ev/s for 5 min, p95 ≤ 60 s).

Starts the stack (broker, chserver, collector, consumer, Dagster webserver + daemon) on free ports
in a temp dir, sends synthetic events at a steady rate through the collector (Batch API, rate limits
lifted, ``--senders`` threads) for ``--seconds``, and polls ``analytics.events``. Every event's
``insert_id`` names its send tick (``--tick``, 0.5 s), so one ``GROUP BY`` per poll tells when each
tick's events are all visible: an event's latency is that time minus when the collector accepted
its batch (200). Prints p50/p95/max accepted → visible, the sustained rate through the whole stack,
and per stage (collector accepted, landed = lake commit log, visible in analytics.events) its rate
and the backlog it left: the stage whose backlog grows is the one that limits. Load average printed.

    .venv/bin/python bench/e2e.py [--rate 10000] [--seconds 300] [--flush-age 5] [--sensor-interval 5]

Freshness is bounded by CONSUMER_FLUSH_AGE_S + LANDING_SENSOR_INTERVAL_SECONDS + one sensor tick:
the open hour's new rows are appended live by the landing sensor (orchestration/sensors/live.py, at
most LIVE_MAX_ROWS_PER_TICK rows a tick), not re-loaded by a Dagster run whose cost grows with the
hour (before issue 17: p95 221 s at 10k ev/s). A closed hour's canonical run (LIVE_HOUR_CLOSE_SECONDS
after its end) replaces rows already visible, so it does not delay visibility. The poll interval
(--poll, 2 s) is the measurement's resolution.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from demo.dagster_api import DagsterAPI
from demo.load import LoadGenerator
from demo.sender import Sender
from embedded.broker import free_port
from eventpipe_core.lake_catalog import iter_commit_records
from eventpipe_core.settings import get_settings, load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10_000.0, help="events/s sent")
    ap.add_argument("--seconds", "--duration", dest="seconds", type=float, default=300.0, help="seconds of sending")
    ap.add_argument("--flush-age", type=float, default=5.0, help="CONSUMER_FLUSH_AGE_S")
    ap.add_argument("--sensor-interval", type=int, default=5, help="LANDING_SENSOR_INTERVAL_SECONDS")
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between polls of analytics.events")
    ap.add_argument("--tick", type=float, default=0.5, help="seconds between two sends (one tick = one latency bucket)")
    ap.add_argument("--senders", type=int, default=4, help="sending threads (one HTTP connection each)")
    ap.add_argument("--batch", type=int, default=1000, help="events per /batch request")
    ap.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the last events")
    ap.add_argument("--users", type=int, default=80,
                    help="distinct users/devices; more than ~100 devices in one hour used to fail enrichment "
                    "against chserver (identity-map reads > 4 KiB of query parameters sent as multipart/form-data)")
    args = ap.parse_args()

    from embedded.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="eventpipe-bench-e2e-"))
    os.environ.update({  # the stack's child processes inherit these
        "EVENTPIPE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "CLICKHOUSE_URL": f"http://default:@127.0.0.1:{free_port()}/analytics",
        "COLLECTOR_PORT": str(free_port()),
        "DAGSTER_PORT": str(free_port()),
        "QUERY_API_PORT": str(free_port()),
        "CONSUMER_METRICS_PORT": str(free_port()),
        "DAGSTER_PARTITIONS_START": (datetime.now(UTC).date() - timedelta(days=1)).isoformat(),
        "CONSUMER_FLUSH_AGE_S": str(args.flush_age),
        # 10k ev/s is 864 M events a day: past what day partitions take (a load rewrites its day)
        "CLICKHOUSE_PARTITION": "hour",
        "LANDING_SENSOR_INTERVAL_SECONDS": str(args.sensor_interval),
        # a load test, not an abuse test: 80 users at 10k ev/s are far above the per-device limits
        "COLLECTOR_V2_EPS": "1e9", "COLLECTOR_BATCH_EPS": "1e9", "COLLECTOR_KEY_RPS": "1e9",
    })
    get_settings.cache_clear()
    settings = load_settings()
    stack = Stack(settings)
    print(f"starting the embedded stack in {home} …")
    t0 = time.monotonic()
    stack.start(echo=lambda m: print(m))
    print(f"stack up in {time.monotonic() - t0:.0f} s; load average {_load()}")
    try:
        run(settings, args)
    finally:
        stack.stop(echo=lambda _m: None)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Tick:
    n: int = 0  # events of this tick accepted so far
    sent: int = 0
    accepted_at: float = 0.0  # wall time the last of its batches was accepted
    visible_at: float | None = None


def _landed(lake) -> int:  # noqa: ANN001 - LakeStore
    """Rows plus dead letters the lake's commit log covers (records of committed ranges)."""
    return sum(r.records for r in iter_commit_records(lake))


def run(settings, args: argparse.Namespace) -> None:  # noqa: ANN001 - Settings
    import clickhouse_connect

    from eventpipe_core.lake_store import open_lake

    keys = subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "keys", "create", "--project", "bench"],
                          capture_output=True, text=True, check=True)
    key = keys.stdout.strip().splitlines()[-1]
    ch = settings.clickhouse
    client = clickhouse_connect.get_client(host=ch.host, port=ch.port, username=ch.user, password=ch.password)
    lake = open_lake(settings)
    ticks: dict[int, Tick] = {}
    lock = threading.Lock()
    timeline: list[tuple[float, int, int, int]] = []  # (wall, accepted, landed, visible)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            now = time.time()
            try:
                counts = dict(client.query(
                    f"SELECT toUInt32(substring(insert_id, 2, 7)), count() FROM {ch.database}.events "
                    "WHERE project = 'bench' GROUP BY 1").result_rows)
            except Exception:  # noqa: BLE001 - the table appears with the first load
                counts = {}
            try:
                landed = _landed(lake)
            except Exception:  # noqa: BLE001 - a commit record being written
                landed = timeline[-1][2] if timeline else 0
            with lock:
                for t, tick in ticks.items():
                    if tick.visible_at is None and tick.n and tick.n == tick.sent and counts.get(t, 0) >= tick.n:
                        tick.visible_at = now
                accepted = sum(tk.n for tk in ticks.values())
            timeline.append((now, accepted, landed, sum(counts.values())))
            stop.wait(args.poll)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    collector = f"http://{settings.collector_host}:{settings.collector_port}"
    print(f"sending {args.rate:g} events/s for {args.seconds:g} s ({args.senders} senders, {args.batch}/request) …")
    work: queue.Queue = queue.Queue(maxsize=args.senders * 4)
    failures: list[BaseException] = []

    def sender_loop() -> None:
        with Sender(collector, key) as sender:
            while (item := work.get()) is not None:
                t, batch = item
                try:
                    sender.send(batch, batch_size=args.batch)
                except Exception as exc:  # noqa: BLE001 - reported at the end
                    failures.append(exc)
                    continue
                with lock:
                    tick = ticks[t]
                    tick.n += len(batch)
                    tick.accepted_at = max(tick.accepted_at, time.time())

    senders = [threading.Thread(target=sender_loop, daemon=True) for _ in range(args.senders)]
    for th in senders:
        th.start()
    gen = LoadGenerator(users=args.users, seed=7)
    start = time.monotonic()
    owed = 0.0
    late = 0
    for t in range(max(1, round(args.seconds / args.tick))):
        delay = start + t * args.tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
        owed += args.rate * args.tick
        n = int(owed)
        owed -= n
        now_ms = int(time.time() * 1000)
        batch = [gen.event(now_ms) for _ in range(n)]
        for j, e in enumerate(batch):
            e["insert_id"] = f"t{t:07d}-{j}"
        with lock:
            ticks[t] = Tick(sent=n)
        for i in range(0, n, args.batch):  # one queue item per request: senders share a tick
            work.put((t, batch[i:i + args.batch]))
    for _ in senders:
        work.put(None)
    for th in senders:
        th.join()
    send_s = time.monotonic() - start
    accepted = sum(tk.n for tk in ticks.values())
    print(f"collector: {accepted:,} accepted in {send_s:.1f} s ({accepted / send_s:,.0f} events/s offered "
          f"{args.rate:g}); generator late on {late} of {len(ticks)} ticks; {len(failures)} failed sends; "
          f"load average {_load()}")
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline:
        with lock:
            if all(tk.visible_at is not None for tk in ticks.values() if tk.n):
                break
        time.sleep(1)
    stop.set()
    poller.join()
    dagster = DagsterAPI(f"http://127.0.0.1:{settings.dagster_port}")
    runs = {status: len(dagster.runs((status,))) for status in ("SUCCESS", "FAILURE")}
    print(f"Dagster runs: {runs['SUCCESS']} succeeded, {runs['FAILURE']} failed")
    report(ticks, timeline, args)


def report(ticks: dict[int, Tick], timeline: list[tuple[float, int, int, int]], args: argparse.Namespace) -> None:
    seen = [tk for tk in ticks.values() if tk.n and tk.visible_at is not None]
    total = sum(tk.n for tk in ticks.values())
    if not seen:
        print("no event became visible in analytics.events")
        return
    lat = sorted((tk.visible_at - tk.accepted_at, tk.n) for tk in seen)  # type: ignore[operator]

    def pct(q: float) -> float:
        want, acc = q * sum(n for _, n in lat), 0
        for value, n in lat:
            acc += n
            if acc >= want:
                return value
        return lat[-1][0]

    visible = sum(tk.n for tk in seen)
    first = min(tk.accepted_at for tk in seen) - args.tick
    last = max(tk.visible_at for tk in seen)  # type: ignore[type-var]
    print(f"visible in analytics.events: {visible:,}/{total:,} events")
    print(f"freshness (accepted → visible, ±{args.poll:g} s): p50 {pct(.5):.1f} s · p95 {pct(.95):.1f} s · "
          f"max {lat[-1][0]:.1f} s   (target p95 ≤ 60 s)")
    print(f"sustained through the whole stack: {visible / (last - first):,.0f} events/s "
          f"(offered {args.rate:g}/s for {args.seconds:g} s; target ≥ 10,000)")
    if len(timeline) >= 2:
        t0 = timeline[0][0]
        end_send = next((i for i, row in enumerate(timeline) if row[1] >= total), len(timeline) - 1)
        w, acc, landed, vis = timeline[end_send]
        span = max(w - t0, 1e-9)
        print(f"per stage while sending ({span:.0f} s): collector accepted {acc / span:,.0f}/s · landed "
              f"{landed / span:,.0f}/s (backlog {acc - landed:,}) · visible {vis / span:,.0f}/s "
              f"(backlog {landed - vis:,})")
        load = ("landing sensor's live appends (lake → analytics.events)" if get_settings().live_load
                else "Dagster hourly load (lake → analytics.events)")
        stages = {"landing consumer (Kafka → lake)": acc - landed, load: landed - vis}
        # a stage that keeps up leaves a steady backlog (its latency); one that limits, a growing one
        _, macc, mlanded, mvis = timeline[end_send // 2]
        middle = {"landing consumer (Kafka → lake)": macc - mlanded, load: mlanded - mvis}
        print("backlog at half / end of sending: " + " · ".join(
            f"{k} {middle[k]:,} → {v:,}" for k, v in stages.items()))
        mw = timeline[end_send // 2][0]
        print(f"steady state (second half of sending, {w - mw:.0f} s): accepted {(acc - macc) / max(w - mw, 1e-9):,.0f}/s · "
              f"landed {(landed - mlanded) / max(w - mw, 1e-9):,.0f}/s · visible {(vis - mvis) / max(w - mw, 1e-9):,.0f}/s "
              "(the whole-stack figure above also counts the drain after sending, so it stays under the offered rate)")
        name, backlog = max(stages.items(), key=lambda kv: kv[1])
        if total < args.rate * args.seconds * 0.95:
            print("limiting stage: the collector/sender (it accepted less than offered)")
        elif backlog <= 1.5 * max(middle[name], args.rate * 5):
            print(f"limiting stage: none keeps falling behind at {args.rate:g}/s; the largest backlog ({name}, "
                  f"{backlog:,} events ≈ {backlog / args.rate:.1f} s) is its latency, not growing")
        else:
            print(f"limiting stage: {name} — its backlog when sending ended: {backlog:,} events (half-way: "
                  f"{middle[name]:,})")


if __name__ == "__main__":
    main()
