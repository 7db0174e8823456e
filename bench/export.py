"""Peak memory of the raw export (`GET /api/2/export` body) for a small and a large range, side by side.

Writes a synthetic enriched lake (ENRICHED_SCHEMA, one object per hour, ``--rows`` events per hour) into a temp
dir, then exports ``--small`` and ``--hours`` hours in two fresh child processes and prints each one's peak RSS,
bytes written and rate. Bounded memory means the large export's peak RSS stays near the small one's although it
writes many times more bytes.

    .venv/bin/python bench/export.py --hours 48 --rows 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

START = datetime(2026, 1, 1, tzinfo=UTC)


def build_lake(root: Path, hours: int, rows: int) -> None:
    import numpy as np
    import pyarrow as pa

    from enrichment.lake_io import write_enriched
    from enrichment.rules import ENRICHED_SCHEMA, to_parquet_bytes
    from eventpipe_core.lake_store import LocalLakeStore

    lake = LocalLakeStore(root)
    rng = np.random.default_rng(0)
    for h in range(hours):
        hour = START + timedelta(hours=h)
        ms = np.sort(rng.integers(0, 3_600_000, rows)) + int(hour.timestamp() * 1000)
        t = pa.array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        users = rng.integers(0, 50_000, rows)
        cols = {}
        for f in ENRICHED_SCHEMA:
            if f.name in ("event_time", "received_at", "ingested_at"):
                cols[f.name] = t
            elif f.name == "event_hour":
                cols[f.name] = pa.array([hour] * rows, pa.timestamp("ms", tz="UTC"))
            elif f.name == "event_date":
                cols[f.name] = pa.array([hour.date()] * rows, pa.date32())
            elif f.name == "insert_id":
                cols[f.name] = pa.array([f"{h:04d}-{i:08d}-{'x' * 16}" for i in range(rows)])
            elif f.name == "project":
                cols[f.name] = pa.array(["bench"] * rows)
            elif f.name in ("user_id", "actor_id", "resolved_user_id"):
                cols[f.name] = pa.array([f"user-{u:06d}" for u in users])
            elif f.name == "event_type":
                cols[f.name] = pa.array(rng.choice(["page_view", "click", "purchase", "signup"], rows))
            elif f.name == "event_properties":
                props = [json.dumps({"path": f"/p/{u % 300}", "ms": int(m % 997)}) for u, m in zip(users, ms, strict=True)]
                cols[f.name] = pa.array(props)
            elif f.name == "user_agent":
                cols[f.name] = pa.array(["Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"] * rows)
            elif pa.types.is_string(f.type):
                cols[f.name] = pa.array(["{}" if "properties" in f.name or f.name == "groups" else "web"] * rows)
            elif f.nullable:
                cols[f.name] = pa.nulls(rows, f.type)
            else:
                cols[f.name] = pa.array(np.zeros(rows, dtype=np.int64)).cast(f.type)
        table = pa.Table.from_pydict(cols, schema=ENRICHED_SCHEMA)
        write_enriched(lake, hour, to_parquet_bytes(table))


def child(root: str, hours: int) -> None:
    """Export `hours` hours into a byte counter (what a client reading the response would get)."""
    from eventpipe_core.export import iter_export_hours, iter_export_zip
    from eventpipe_core.lake_store import LocalLakeStore

    lake = LocalLakeStore(Path(root))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    total = 0
    hour_list = [START + timedelta(hours=h) for h in range(hours)]
    for chunk in iter_export_zip(iter_export_hours(lake, "bench", hour_list), "bench"):
        total += len(chunk)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"hours": hours, "bytes": total, "seconds": elapsed, "rss_after_imports_mib": rss_before / 1024,
                      "peak_rss_mib": peak / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--small", type=int, default=2)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        t0 = time.perf_counter()
        build_lake(Path(tmp), args.hours, args.rows)
        lake_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet"))
        print(f"lake: {args.hours} hours x {args.rows} events, {lake_bytes / 2**20:.1f} MiB Parquet, "
              f"built in {time.perf_counter() - t0:.1f}s")
        results = []
        for hours in (args.small, args.hours):
            out = subprocess.run([sys.executable, __file__, "--child", tmp, str(hours)], capture_output=True, text=True,
                                 check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for r in results:
            events = r["hours"] * args.rows
            print(f"export {r['hours']:4d} h: {events:>9,} events, {r['bytes'] / 2**20:8.1f} MiB zip, "
                  f"{events / r['seconds']:8,.0f} ev/s, peak RSS {r['peak_rss_mib']:.0f} MiB "
                  f"(after imports {r['rss_after_imports_mib']:.0f} MiB)")
        small, large = results
        print(f"ratio: {large['bytes'] / small['bytes']:.1f}x the bytes for {large['peak_rss_mib'] / small['peak_rss_mib']:.2f}x "
              "the peak RSS (machine shared and loaded: timings noisy)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
