"""End-to-end freshness and throughput through the whole embedded stack.

Starts the stack (broker, chserver, collector, consumer, Dagster webserver + daemon) on free ports
in a temp dir, sends synthetic events at a steady rate through the collector (Batch API) for a
while, and polls ``analytics.events`` for their ``insert_id``s. Prints, per event, the time from
"accepted" (the collector's 200) to "visible in analytics.events" as p50/p95/max, and the sustained
rate through the whole stack (events visible / time from first accepted to last visible).

    .venv/bin/python bench/e2e.py [--rate 100] [--duration 120] [--flush-age 5] [--sensor-interval 5]

Freshness here is bounded by CONSUMER_FLUSH_AGE_S + LANDING_SENSOR_INTERVAL_SECONDS + a Dagster run
(launch + enrich + load of the current hour, which grows with the hour's rows); the poll interval
(--poll, 1 s) is the measurement's resolution.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from demo.dagster_api import DagsterAPI
from demo.load import percentile, run_load
from demo.sender import Sender
from embedded.broker import free_port
from eventpipe_core.settings import get_settings, load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="events/s sent")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of sending")
    ap.add_argument("--flush-age", type=float, default=5.0, help="CONSUMER_FLUSH_AGE_S")
    ap.add_argument("--sensor-interval", type=int, default=5, help="LANDING_SENSOR_INTERVAL_SECONDS")
    ap.add_argument("--poll", type=float, default=1.0, help="seconds between polls of analytics.events")
    ap.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the last events")
    ap.add_argument("--users", type=int, default=80,
                    help="distinct users/devices; more than ~100 devices in one hour currently fails enrichment "
                    "against chserver (identity-map reads send > 4 KiB of query parameters, which clickhouse-connect "
                    "then sends as multipart/form-data, not supported by chserver)")
    args = ap.parse_args()

    from embedded.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="eventpipe-bench-e2e-"))
    os.environ.update({  # the stack's child processes inherit these
        "EVENTPIPE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "CLICKHOUSE_URL": f"http://default:@127.0.0.1:{free_port()}/analytics",
        "COLLECTOR_PORT": str(free_port()),
        "DAGSTER_PORT": str(free_port()),
        "CONSUMER_METRICS_PORT": str(free_port()),
        "DAGSTER_PARTITIONS_START": (datetime.now(UTC).date() - timedelta(days=1)).isoformat(),
        "CONSUMER_FLUSH_AGE_S": str(args.flush_age),
        "LANDING_SENSOR_INTERVAL_SECONDS": str(args.sensor_interval),
    })
    get_settings.cache_clear()
    settings = load_settings()
    stack = Stack(settings)
    print(f"starting the embedded stack in {home} …")
    t0 = time.monotonic()
    stack.start(echo=lambda m: print(m))
    print(f"stack up in {time.monotonic() - t0:.0f} s")
    try:
        run(settings, args)
    finally:
        stack.stop(echo=lambda _m: None)


def run(settings, args: argparse.Namespace) -> None:  # noqa: ANN001 - Settings
    import clickhouse_connect

    # `eventpipe keys create` (bench/collector.py shadows the collector package for scripts run from bench/)
    keys = subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "keys", "create", "--project", "bench"],
                          capture_output=True, text=True, check=True)
    key = keys.stdout.strip().splitlines()[-1]
    ch = settings.clickhouse
    client = clickhouse_connect.get_client(host=ch.host, port=ch.port, username=ch.user, password=ch.password)
    visible_at: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            now = time.time()
            try:
                ids = client.query(f"SELECT insert_id FROM {ch.database}.events WHERE project = 'bench'").result_rows
            except Exception:  # noqa: BLE001 - the table appears with the first load
                ids = []
            for (iid,) in ids:
                visible_at.setdefault(iid, now)
            stop.wait(args.poll)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    collector = f"http://{settings.collector_host}:{settings.collector_port}"
    print(f"sending {args.rate:g} events/s for {args.duration:g} s …")
    with Sender(collector, key) as sender:
        result = run_load(sender, args.rate, args.duration, users=args.users, seed=7)
    accepted = result.accepted_at
    print(f"collector: {result.accepted:,} accepted in {result.elapsed_s:.1f} s ({result.rate:,.0f} events/s), "
          f"request p50 {percentile(result.request_latencies_s, 50) * 1000:.0f} ms")
    dagster = DagsterAPI(f"http://127.0.0.1:{settings.dagster_port}")
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline and not set(accepted) <= set(visible_at):
        time.sleep(1)
    stop.set()
    poller.join()
    runs = {status: len(dagster.runs((status,))) for status in ("SUCCESS", "FAILURE")}
    print(f"Dagster runs: {runs['SUCCESS']} succeeded, {runs['FAILURE']} failed")
    seen = [iid for iid in accepted if iid in visible_at]
    lat = [visible_at[i] - accepted[i] for i in seen]
    if not lat:
        print("no event became visible in analytics.events")
        return
    first, last = min(accepted.values()), max(visible_at[i] for i in seen)
    print(f"visible in analytics.events: {len(seen):,}/{len(accepted):,}")
    print(f"freshness (accepted → visible): p50 {percentile(lat, 50):.1f} s · p95 {percentile(lat, 95):.1f} s · "
          f"max {max(lat):.1f} s")
    print(f"sustained through the whole stack: {len(seen) / (last - first):,.0f} events/s "
          f"(offered {args.rate:g}/s over {args.duration:g} s)")


if __name__ == "__main__":
    main()
