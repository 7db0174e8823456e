"""Enrichment backfill throughput: the Spark job (``local[2]``) vs the in-process engine, same day of events.

Lands one synthetic day (default 1M events, 4 Kafka partitions, ~1 % producer-retry duplicates, a few
bots, logged-in and anonymous devices) in a temporary file:// lake, then in the same run:

1. the in-process engine — the ``enriched_events`` asset's hour loop (read_raw_hour -> enrich_hour ->
   write_enriched, carrying sessions and identities), with the identity map in memory instead of
   ClickHouse round trips;
2. the Spark job through ``spark-submit`` (what Dagster launches through Pipes), ``--master local[2]``;

prints rows/s of each (Spark both end to end and without JVM/session start) and whether the two wrote
byte-identical files.

    .venv/bin/python bench/backfill.py [--events 1000000] [--master local[2]] [--buckets 0]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrichment.lake_io import enriched_key, hours_between, load_commit_records, read_raw_hour, write_enriched  # noqa: E402
from enrichment.rules import EnrichmentConfig, enrich_hour, session_state_from_enriched, to_parquet_bytes  # noqa: E402
from eventpipe_core.event_model import RAW_EVENT_SCHEMA  # noqa: E402
from eventpipe_core.lake_catalog import RAW_PREFIX, CommitRecord, LandedObject, hour_dir  # noqa: E402
from eventpipe_core.lake_store import LakeStore, open_lake  # noqa: E402
from eventpipe_core.settings import load_settings  # noqa: E402
from spark_jobs.backfill import BackfillSpec, IdentityLedger, hour_range  # noqa: E402
from spark_jobs.launch import spark_env, spark_submit_command  # noqa: E402

DAY = datetime(2026, 1, 5, tzinfo=UTC)
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "python-requests/2.31.0",
]


def synthetic_day(events: int, devices: int, seed: int = 7) -> pa.Table:
    """One day of raw rows (RAW_EVENT_SCHEMA), ~1 % duplicated, kafka_partition = device hash % 4."""
    rng = np.random.default_rng(seed)
    n = events
    t = np.sort(rng.integers(0, 86_400_000, n)) + int(DAY.timestamp() * 1000)
    dev = rng.integers(0, devices, n)
    dup = rng.random(n) < 0.01
    ids = np.array([f"e{i:09d}" for i in range(n)], dtype=object)
    pool = np.array([f"dev-{k:07d}" for k in range(devices)], dtype=object)
    logged_in = (dev % 5 == 0) & (rng.random(n) < 0.5)  # a fifth of devices log in now and then
    types = rng.choice(np.array(["page_view", "click", "purchase"], dtype=object), n)
    agents = np.array(AGENTS, dtype=object)[dev % len(AGENTS)]
    users = np.where(logged_in, np.array([f"user-{k // 5:07d}" for k in range(devices)], dtype=object)[dev], None)
    cols = {
        "insert_id": np.concatenate([ids, ids[dup]]),
        "event_type": np.concatenate([types, types[dup]]),
        "event_time": np.concatenate([t, t[dup]]),
        "user_id": np.concatenate([users, users[dup]]),
        "device_id": np.concatenate([pool[dev], pool[dev][dup]]),
        "user_agent": np.concatenate([agents, agents[dup]]),
        "project": np.full(n + dup.sum(), "bench", dtype=object),
        "received_at": np.concatenate([t + 150, t[dup] + 2_000]),
        "kafka_partition": np.concatenate([dev % 4, dev[dup] % 4]).astype("int32"),
        "event_properties": np.full(n + dup.sum(), '{"path":"/home"}', dtype=object),
    }
    m = n + int(dup.sum())
    arrays = []
    for f in RAW_EVENT_SCHEMA:
        if f.name in cols:
            v = cols[f.name]
            arrays.append(pa.array(v, type=pa.int64()).cast(f.type) if f.type == pa.timestamp("ms", tz="UTC")
                          else pa.array(v, type=f.type))
        elif f.name == "kafka_offset":
            arrays.append(pa.array(np.zeros(m, dtype="int64")))
        else:
            arrays.append(pa.nulls(m, type=f.type))
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)


def land(lake: LakeStore, day: pa.Table, batch_rows: int = 50_000) -> int:
    """Land like the consumer: per Kafka partition, batches in offset order, one object per event hour + commit record."""
    records = 0
    for p in range(4):
        part = day.filter(pa.compute.equal(day.column("kafka_partition"), p)).sort_by("received_at")
        part = part.set_column(part.schema.get_field_index("kafka_offset"), "kafka_offset", pa.array(np.arange(part.num_rows)))
        for seq, start in enumerate(range(0, part.num_rows, batch_rows)):
            batch = part.slice(start, batch_rows)
            hours = pa.compute.floor_temporal(batch.column("event_time"), unit="hour").to_pylist()
            objects = []
            for h in sorted(set(hours)):
                rows = batch.filter(pa.compute.equal(pa.compute.floor_temporal(batch.column("event_time"), unit="hour"), h))
                date, hour = h.strftime("%Y-%m-%d"), h.strftime("%H")
                key = f"{hour_dir(RAW_PREFIX, date, hour)}p{p:05d}-{start:012d}.parquet"
                sink = io.BytesIO()
                pq.write_table(rows, sink, compression="zstd")
                lake.put(key, sink.getvalue())
                times = pa.compute.min_max(rows.column("event_time").cast(pa.int64())).as_py()
                objects.append(LandedObject(key, date, hour, rows.num_rows, times["min"], times["max"]))
            record = CommitRecord("events", p, seq, start, start + batch.num_rows, tuple(objects),
                                  int(DAY.timestamp() * 1000) + 86_400_000 + seq, "bench", batch.num_rows)
            lake.put_if_absent(record.key, record.to_json())
            records += 1
    return records


def in_process(lake: LakeStore, hours: list[datetime], config: EnrichmentConfig) -> int:
    """The asset's loop (orchestration/lake/assets.py) minus ClickHouse: identities kept in memory."""
    records = load_commit_records(lake)
    carry: dict[str, tuple[int, int]] = {}
    ledger = IdentityLedger({})
    rows = 0
    for hour in hours:
        raw = read_raw_hour(lake, hour, records)
        result = enrich_hour(raw, hour_start=hour, carry=carry, identity_map=ledger.view(raw.column("device_id").to_pylist()),
                             config=config)
        write_enriched(lake, hour, to_parquet_bytes(result.table))
        ledger.learn(result.identities)
        carry = session_state_from_enriched(result.table.to_pandas(), hour + timedelta(hours=1), config.session_timeout)
        rows += result.table.num_rows
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=40_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--buckets", type=int, default=0, help="session-key buckets (0 = Spark default parallelism)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        work = Path(tmp)
        settings = load_settings(eventpipe_home=work, lake_url=(work / "lake").as_uri())
        lake = open_lake(settings)
        t0 = time.monotonic()
        day = synthetic_day(args.events, args.devices)
        n_records = land(lake, day)
        hours = hours_between(DAY, DAY + timedelta(days=1))
        print(f"landed {day.num_rows:,} raw rows ({args.events:,} events + duplicates) in {n_records} commit records, "
              f"{time.monotonic() - t0:.1f}s")

        config = EnrichmentConfig()
        t0 = time.monotonic()
        rows = in_process(lake, hours, config)
        inproc_s = time.monotonic() - t0
        inproc_files = [lake.get(enriched_key(h)) for h in hours]
        print(f"in-process: {rows:,} enriched rows in {inproc_s:.1f}s = {rows / inproc_s:,.0f} rows/s")

        for h in hours:
            lake.delete(enriched_key(h))
        start, end = hour_range(DAY, DAY + timedelta(days=1))
        spec = BackfillSpec(lake_url=lake.url, start=start, end=end, buckets=args.buckets, carry_path=None)
        (work / "spec.json").write_text(spec.to_json())
        cmd = spark_submit_command(settings, work / "spec.json", work, master=args.master)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env={**os.environ, **spark_env(args.master, work)}, capture_output=True, text=True)
        spark_s = time.monotonic() - t0
        if proc.returncode != 0:
            sys.exit(f"spark job failed:\n{proc.stderr[-4000:]}")
        summary = [line for line in proc.stdout.splitlines() if re.match(r"\d+ hours, \d+ rows in", line)]
        job_s = float(re.search(r"rows in ([\d.]+)s", summary[-1]).group(1)) if summary else spark_s  # type: ignore[union-attr]
        identical = all(lake.get(enriched_key(h)) == f for h, f in zip(hours, inproc_files, strict=True))
        print(f"spark {args.master}: {rows:,} rows in {spark_s:.1f}s end to end = {rows / spark_s:,.0f} rows/s; "
              f"job without JVM/session start {job_s:.1f}s = {rows / job_s:,.0f} rows/s")
        print(f"byte-identical enriched files: {identical}")


if __name__ == "__main__":
    main()
