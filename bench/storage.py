"""Bytes per event in each storage tier, measured on the same synthetic events (the demo's product generator).

    raw JSON       the Amplitude HTTP V2 event JSON a client sends (compact, one event)
    Kafka record   the collector's envelope (event + server fields), uncompressed
    raw lake       landed Parquet (ingest_consumer.writer.to_parquet: zstd), one object per event hour
    enriched lake  enriched Parquet (enrichment.rules.to_parquet_bytes), one object per hour
    ClickHouse     analytics.events (the real DDL) in chDB after OPTIMIZE FINAL: bytes on disk of active parts

    .venv/bin/python bench/storage.py --users 2000 --days 3 [--layout legacy]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--layout", choices=["actor", "legacy"], default="actor",
                    help="analytics.events layout: actor (new tables) or legacy (tables created before it)")
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from demo.generator import DemoConfig, generate
    from enrichment.rules import enrich_hour, to_parquet_bytes
    from eventpipe_core.event_model import encode_envelope, envelope_to_row, make_envelope, rows_to_table
    from ingest_consumer.writer import to_parquet
    from orchestration.clickhouse.schema import SchemaPlan

    t0 = time.perf_counter()
    data = generate(DemoConfig(users=args.users, days=args.days, seed=7, last_day=date(2026, 1, 31)))
    events = data.events
    n = len(events)
    raw_json = sum(len(json.dumps(e, separators=(",", ":"))) for e in events)
    envelopes = [encode_envelope(make_envelope(e, project="demo", received_at_ms=e["time"] + 500, client_ip="203.0.113.7",
                                               upload_id="u-0001")) for e in events]
    kafka = sum(len(b) for b in envelopes)
    by_hour: dict[datetime, list[dict]] = defaultdict(list)
    for offset, b in enumerate(envelopes):
        row = envelope_to_row(b, 0, offset)
        by_hour[row["event_time"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)].append(row)
    raw_lake = enriched_lake = 0
    enriched_tables = []
    for hour, rows in sorted(by_hour.items()):
        table = rows_to_table(rows)
        raw_lake += len(to_parquet(table))
        result = enrich_hour(table, hour_start=hour)
        enriched_lake += len(to_parquet_bytes(result.table))
        enriched_tables.append(result.table)
    print(f"{n:,} events over {len(by_hour)} hours ({args.users} users, {args.days} days), prepared in "
          f"{time.perf_counter() - t0:.1f}s")

    import chdb

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        conn = chdb.connect(str(Path(tmp) / "ch"))
        cur = conn.cursor()
        plan = SchemaPlan("analytics", None, 36500, layout=args.layout)
        for stmt in [s for s in plan.statements() if "identity_map" not in s]:
            cur.execute(stmt)
        for table in enriched_tables:
            path = Path(tmp) / "hour.parquet"
            pq.write_table(table, path)
            cur.execute(f"INSERT INTO analytics.events SELECT * FROM file('{path}', Parquet)")
        cur.execute("OPTIMIZE TABLE analytics.events FINAL")
        cur.execute("SELECT sum(bytes_on_disk), sum(rows), count() FROM system.parts "
                    "WHERE database = 'analytics' AND table = 'events' AND active")
        ch_bytes, ch_rows, parts = cur.fetchone()
        conn.close()
    assert ch_rows <= n, "ClickHouse holds more rows than events"
    tiers = [("raw JSON (client payload)", raw_json), ("Kafka record (envelope)", kafka), ("raw lake (Parquet zstd)", raw_lake),
             ("enriched lake (Parquet)", enriched_lake), (f"ClickHouse ({parts} parts)", int(ch_bytes))]
    print(f"{'tier':32} {'bytes/event':>12} {'vs raw JSON':>12}")
    for name, total in tiers:
        print(f"{name:32} {total / n:12.1f} {total / raw_json:11.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
