"""Lake layout before and after compaction: bytes per event and objects per hour, same events, same run.

Lands a steady stream (default 10 M events/day scaled to ``--hours`` hours, 4 Kafka partitions) the way
the landing consumer does with ``CONSUMER_FLUSH_AGE_S`` = 30 s: one object per partition and event hour
for every 30-s batch, then a commit record. Then runs :func:`enrichment.compaction.compact_lake` and
:func:`vacuum` and prints, for both layouts, objects per hour, bytes per event, and the time to read one
hour back with ``read_raw_hour``; plus compaction rows/s.

    .venv/bin/python bench/compaction.py [--events-per-day 10000000] [--hours 2] [--flush-s 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backfill import AGENTS  # noqa: E402
from enrichment.compaction import compact_lake, vacuum  # noqa: E402
from enrichment.lake_io import read_raw_hour  # noqa: E402
from eventpipe_core.event_model import RAW_EVENT_SCHEMA  # noqa: E402
from eventpipe_core.lake_catalog import RAW_PREFIX, committed_objects  # noqa: E402
from eventpipe_core.lake_store import LocalLakeStore  # noqa: E402
from tests.orchestration_support import land_batch  # noqa: E402

H0 = datetime(2026, 1, 5, tzinfo=UTC)


def lake_stats(lake: LocalLakeStore, events: int, hours: int) -> tuple[int, float, float]:
    objects = committed_objects(lake)
    size = sum((lake.root / o.key).stat().st_size for o in objects)
    t0 = time.perf_counter()
    read_raw_hour(lake, H0)
    return len(objects), size / events, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events-per-day", type=int, default=10_000_000)
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--flush-s", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(3)
    per_batch = max(1, args.events_per_day * args.flush_s // 86_400 // args.partitions)
    batches = args.hours * 3600 // args.flush_s
    with tempfile.TemporaryDirectory() as tmp:
        lake = LocalLakeStore(Path(tmp) / "lake")
        events = 0
        t0 = time.perf_counter()
        for p in range(args.partitions):
            offset = 0
            for b in range(batches):
                start = H0 + timedelta(seconds=b * args.flush_s)
                rows = []
                for i in range(per_batch):
                    t = start + timedelta(milliseconds=int(rng.integers(0, args.flush_s * 1000)))
                    dev = int(rng.integers(0, 50_000))
                    rows.append({**dict.fromkeys(RAW_EVENT_SCHEMA.names), "insert_id": f"{p}-{offset + i:012d}",
                                 "event_type": "page_view", "event_time": t, "device_id": f"dev-{dev:07d}",
                                 "user_agent": AGENTS[dev % len(AGENTS)], "project": "bench", "received_at": t,
                                 "event_properties": '{"path":"/home"}', "client_ip": f"81.2.{dev % 250}.{dev % 200}"})
                land_batch(lake, rows, kafka_partition=p, seq=b, start_offset=offset,
                           committed_at=start + timedelta(seconds=args.flush_s))
                offset += len(rows)
                events += len(rows)
        land_s = time.perf_counter() - t0
        n0, b0, r0 = lake_stats(lake, events, args.hours)
        t0 = time.perf_counter()
        result = compact_lake(lake, closed_before_ms=int((H0 + timedelta(hours=args.hours)).timestamp() * 1000))
        compact_s = time.perf_counter() - t0
        vac = vacuum(lake, retain_s=0)
        n1, b1, r1 = lake_stats(lake, events, args.hours)
        left = sum(1 for k in lake.list(RAW_PREFIX) if not k.startswith("raw/events/_"))
        print(f"{events:,} events over {args.hours} h, {args.partitions} partitions, {args.flush_s}-s flushes "
              f"({per_batch} events per object); landed in {land_s:.1f} s; machine shared: compare ratios")
        print(f"before: {n0 / args.hours:>8,.0f} objects/hour  {b0:>7.1f} B/event  read one hour {r0:.3f} s")
        print(f"after:  {n1 / args.hours:>8,.0f} objects/hour  {b1:>7.1f} B/event  read one hour {r1:.3f} s")
        print(f"ratio bytes before/after {b0 / b1:.1f}x, objects {n0 / n1:.0f}x; compaction {result.rows / compact_s:,.0f} "
              f"rows/s ({compact_s:.1f} s); vacuum deleted {vac.replaced_deleted} replaced objects, {left} objects left")


if __name__ == "__main__":
    main()
