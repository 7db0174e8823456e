"""Bytes per event in each storage tier, measured on the same synthetic events (the demo's product generator).

    raw JSON       the Amplitude HTTP V2 event JSON a client sends (compact, one event)
    Kafka record   the collector's envelope (event + server fields), uncompressed
    raw lake       landed Parquet (ingest_consumer.writer.to_parquet: zstd), one object per event hour
    enriched lake  enriched Parquet (enrichment.rules.to_parquet_bytes), one object per hour
    ClickHouse     analytics.events (the real DDL) in chDB after OPTIMIZE FINAL: bytes on disk of active parts

    .venv/bin/python bench/storage.py --users 3000 --days 3 [--layout legacy] [--partition day] [--chunk-users 20000]

Streaming, so memory stays bounded (a few GB at ~10 M events) whatever ``--users``:

1. The users are generated in chunks of ``--chunk-users`` (``demo.generator.generate`` per chunk; chunk 0 uses
   the historical seed 7, chunk k a seed derived from k). The generator numbers users ``user-00001`` from 1 in
   every chunk, so user ids are rewritten to the global number (``user-{chunk offset + i}``, exactly what one
   unchunked run would name them); device ids and insert ids are random UUIDs from the chunk's own seeded RNG,
   hence distinct across chunks (the run checks it: enrichment's per-hour dedupe must drop nothing and
   ClickHouse must hold every event after OPTIMIZE FINAL). The two crawler devices exist in every chunk's
   output; only chunk 0's are kept, so crawler traffic per hour is the same as in one unchunked run (the
   ~120-event scripted device does repeat per chunk: negligible).
2. A chunk's events are measured as raw JSON and as envelopes, decoded to lake rows and spooled to a temporary
   directory as one zstd Parquet piece per (hour, chunk); then the chunk is freed.
3. After all chunks, hour by hour: the hour's pieces are concatenated and sorted by (event_time, insert_id),
   kafka_offset is renumbered in that order (a global counter, as one run's enumeration gave), and that one
   hour table is what the lake tiers measure: the raw lake object, enrich_hour on the whole hour, the enriched
   object, and one INSERT into chDB per hour. So the lake figures are those of real per-hour objects holding
   every event of the hour (not per chunk-hour pieces), and memory holds one hour at a time.

With ``--chunk-users`` >= ``--users`` (one chunk, seed 7) the figures are those of the former unchunked script.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        current = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        current = float("nan")
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rewrite_user(uid: str, offset: int) -> str:
    return f"user-{int(uid[5:]) + offset:05d}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1500, help="total users (all chunks)")
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--partition", choices=["hour", "day"], default="hour",
                    help="analytics.events partitions (CLICKHOUSE_PARTITION)")
    ap.add_argument("--layout", choices=["actor", "legacy"], default="actor",
                    help="analytics.events layout: actor (new tables) or legacy (tables created before it)")
    ap.add_argument("--chunk-users", type=int, default=20000, help="users generated (and held in memory) at once")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from demo.generator import HOUR_MS, DemoConfig, generate
    from enrichment.rules import enrich_hour, to_parquet_bytes
    from eventpipe_core.event_model import encode_envelope, envelope_to_row, make_envelope, rows_to_table
    from ingest_consumer.writer import to_parquet
    from orchestration.clickhouse.schema import SchemaPlan

    chunk_users = max(1, args.chunk_users)
    chunks = [(start, min(chunk_users, args.users - start)) for start in range(0, args.users, chunk_users)]
    print(f"{args.users:,} users, {args.days} days, layout {args.layout}, {args.partition} partitions, "
          f"{len(chunks)} chunk(s) of <= {chunk_users:,} "
          f"users; lake tiers: one object per event hour holding every chunk's rows of that hour", flush=True)

    t0 = time.perf_counter()
    n = raw_json = kafka = 0
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        spool = Path(tmp) / "spool"
        spool.mkdir()
        pieces: dict[int, list[Path]] = defaultdict(list)  # hour (epoch ms // HOUR_MS) -> spooled pieces

        def spool_hour(hour: int, k: int, rows: list[dict]) -> None:
            path = spool / f"{hour}-{k}.parquet"
            path.write_bytes(to_parquet(rows_to_table(rows)))
            pieces[hour].append(path)

        # --- 1-2: generate chunk by chunk, measure JSON and envelopes, spool lake rows per (hour, chunk) ----------
        for k, (start, size) in enumerate(chunks):
            data = generate(DemoConfig(users=size, days=args.days, seed=7 if k == 0 else 7 + 1_000_003 * k,
                                       last_day=date(2026, 1, 31)))
            events = data.events if k == 0 else [e for e in data.events if e["device_id"] not in data.bot_devices]
            del data
            hour, rows = None, []
            for e in events:  # sorted by (time, insert_id): hours are contiguous
                if start and "user_id" in e:
                    e["user_id"] = _rewrite_user(e["user_id"], start)
                raw_json += len(json.dumps(e, separators=(",", ":")))
                b = encode_envelope(make_envelope(e, project="demo", received_at_ms=e["time"] + 500,
                                                  client_ip="203.0.113.7", upload_id="u-0001"))
                kafka += len(b)
                h = e["time"] // HOUR_MS
                if h != hour:
                    if rows:
                        spool_hour(hour, k, rows)
                    hour, rows = h, []
                rows.append(envelope_to_row(b, 0, 0))  # kafka_offset is renumbered per hour below
            if rows:
                spool_hour(hour, k, rows)
            n += len(events)
            del events, rows
            cur_mb, peak_mb = _rss_mb()
            print(f"  chunk {k + 1}/{len(chunks)}: {n:,} events so far, {time.perf_counter() - t0:.0f}s, "
                  f"RSS {cur_mb:,.0f} MB (peak {peak_mb:,.0f} MB)", flush=True)
        t_gen = time.perf_counter() - t0
        hours = len(pieces)
        print(f"{n:,} events over {hours} hours generated and spooled in {t_gen:.1f}s", flush=True)

        # --- 3: hour by hour: lake objects, enrichment, ClickHouse insert ------------------------------------------
        import chdb

        conn = chdb.connect(str(Path(tmp) / "ch"))
        cur = conn.cursor()
        plan = SchemaPlan("analytics", None, 36500, layout=args.layout, partition=args.partition)
        for stmt in [s for s in plan.statements() if "identity_map" not in s]:
            cur.execute(stmt)
        raw_lake = enriched_lake = duplicates = offset = 0
        hour_file = Path(tmp) / "hour.parquet"
        for i, h in enumerate(sorted(pieces)):
            table = pa.concat_tables([pq.read_table(p) for p in pieces[h]])
            for p in pieces.pop(h):
                p.unlink()
            table = table.sort_by([("event_time", "ascending"), ("insert_id", "ascending")])
            col = table.schema.get_field_index("kafka_offset")
            table = table.set_column(col, table.schema.field(col),
                                     pc.add(pa.array(range(table.num_rows), pa.int64()), offset))
            offset += table.num_rows
            raw_lake += len(to_parquet(table))
            result = enrich_hour(table, hour_start=datetime.fromtimestamp(h * HOUR_MS / 1000, tz=UTC))
            duplicates += result.stats["duplicates"]
            enriched = to_parquet_bytes(result.table)
            enriched_lake += len(enriched)
            pq.write_table(result.table, hour_file)
            cur.execute(f"INSERT INTO analytics.events SELECT * FROM file('{hour_file}', Parquet)")
            del table, result, enriched
            if (i + 1) % 100 == 0:
                cur_mb, peak_mb = _rss_mb()
                print(f"  hour {i + 1}: {offset:,} events through the lakes and ClickHouse, "
                      f"{time.perf_counter() - t0:.0f}s, RSS {cur_mb:,.0f} MB (peak {peak_mb:,.0f} MB)", flush=True)
        assert offset == n, (offset, n)
        cur.execute("OPTIMIZE TABLE analytics.events FINAL")
        cur.execute("SELECT sum(bytes_on_disk), sum(rows), count() FROM system.parts "
                    "WHERE database = 'analytics' AND table = 'events' AND active")
        ch_bytes, ch_rows, parts = cur.fetchone()
        conn.close()
    assert duplicates == 0, f"{duplicates} duplicate insert_ids across chunks"
    assert ch_rows == n, f"ClickHouse holds {ch_rows} rows of {n} events"
    cur_mb, peak_mb = _rss_mb()
    print(f"done in {time.perf_counter() - t0:.1f}s (generate+spool {t_gen:.1f}s); peak RSS {peak_mb:,.0f} MB")
    print(f"{n:,} events, {hours} hours, {args.users:,} users, {args.days} days, layout {args.layout}, "
          f"{args.partition} partitions, {len(chunks)} chunk(s); lake tiers: one object per event hour (all chunks' rows)")
    tiers = [("raw JSON (client payload)", raw_json), ("Kafka record (envelope)", kafka), ("raw lake (Parquet zstd)", raw_lake),
             ("enriched lake (Parquet)", enriched_lake), (f"ClickHouse ({parts} parts)", int(ch_bytes))]
    print(f"{'tier':32} {'bytes/event':>12} {'vs raw JSON':>12}")
    for name, total in tiers:
        print(f"{name:32} {total / n:12.1f} {total / raw_json:11.2f}x")
    print(f"ClickHouse vs raw JSON: {int(ch_bytes) / n:.1f} B/event = {int(ch_bytes) / raw_json:.3f}x of the client's "
          f"JSON ({raw_json / int(ch_bytes):.1f}:1 compression)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
