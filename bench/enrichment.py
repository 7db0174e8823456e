"""Enrichment throughput of one busy hour: ``enrich_hour`` vs a Parquet -> Parquet pass-through, same run.

Builds one hour of raw rows (default 200k events, ~1 % duplicates, ~1,000 distinct user agents incl.
crawlers and scripts, ~20k devices of which a fifth log in, a rate bot, ~5k client IPs and a small
MaxMind database for them), writes it as one zstd Parquet object, then times, interleaved:

1. pass-through: read the Parquet bytes, write them back with the enriched writer options;
2. enrichment: read the same bytes, ``enrich_hour`` (with geo-IP), ``to_parquet_bytes``;
3. (``--reference``) the pre-vectorization per-row rules (tests/enrichment_reference.py), once.

Prints rows/s of each and the ratio enrichment / pass-through (the issue's target is >= 0.3), and
whether the vectorized output is byte-identical to the reference's (with ``--reference``).

    .venv/bin/python bench/enrichment.py [--events 200000] [--repeat 3] [--reference]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrichment.geoip import open_geoip  # noqa: E402
from enrichment.rules import EnrichmentConfig, enrich_hour, to_parquet_bytes  # noqa: E402
from eventpipe_core.event_model import RAW_EVENT_SCHEMA  # noqa: E402

HOUR = datetime(2026, 1, 5, 14, tzinfo=UTC)
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v}.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS {v}_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (Linux; Android {v}; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/{v}.1; +http://www.google.com/bot.html)",
    "python-requests/2.{v}.0",
    "curl/8.{v}.0",
]


def agents(n: int) -> list[str]:
    return [BROWSERS[i % len(BROWSERS)].format(v=10 + i // len(BROWSERS)) for i in range(n)]


def synthetic_hour(events: int, devices: int, n_agents: int, n_ips: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = events
    start = int(HOUR.timestamp() * 1000)
    t = np.sort(rng.integers(0, 3_600_000, n)) + start
    dev = rng.integers(0, devices, n)
    t[dev == 0] = start + 60_000 + np.arange(int((dev == 0).sum())) % 60_000  # device 0: a script, one busy minute
    dup = rng.random(n) < 0.01
    ids = np.array([f"e{i:09d}" for i in range(n)], dtype=object)
    pool = np.array([f"dev-{k:07d}" for k in range(devices)], dtype=object)
    logged_in = (dev % 5 == 0) & (rng.random(n) < 0.5)
    users = np.where(logged_in, np.array([f"user-{k // 5:07d}" for k in range(devices)], dtype=object)[dev], None)
    ua = np.array(agents(n_agents), dtype=object)[dev % n_agents]
    ips = np.array([f"81.2.{(k // 250) % 250}.{k % 250 + 1}" for k in range(n_ips)], dtype=object)[dev % n_ips]
    sent_sid = np.where(dev % 3 == 0, start - 600_000, -1)  # a third of the devices send session ids
    types = rng.choice(np.array(["page_view", "click", "purchase"], dtype=object), n)

    def both(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, v[dup]])

    cols = {
        "insert_id": both(ids), "event_type": both(types), "event_time": both(t), "user_id": both(users),
        "device_id": both(pool[dev]), "user_agent": both(ua), "client_ip": both(ips), "session_id": both(sent_sid),
        "project": np.full(n + dup.sum(), "bench", dtype=object),
        "received_at": np.concatenate([t + 150, t[dup] + 2_000]),
        "kafka_partition": both(dev % 4).astype("int32"),
        "kafka_offset": np.arange(n + dup.sum()),
        "event_properties": np.full(n + dup.sum(), '{"path":"/home"}', dtype=object),
    }
    m = n + int(dup.sum())
    arrays = []
    for f in RAW_EVENT_SCHEMA:
        if f.name in cols:
            v = cols[f.name]
            arrays.append(pa.array(v, type=pa.int64()).cast(f.type) if f.type == pa.timestamp("ms", tz="UTC")
                          else pa.array(v, type=f.type))
        else:
            arrays.append(pa.nulls(m, type=f.type))
    table = pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)
    return table.append_column(pa.field("ingested_at", pa.timestamp("ms", tz="UTC"), nullable=False),
                               pa.array(np.full(m, start + 3_700_000), type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")))


def geo_db(path: Path) -> Path | None:
    try:
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet
    except ImportError:  # a test extra
        return None
    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-City")
    writer.insert_network(IPSet(["81.2.0.0/16"]), {"country": {"names": {"en": "United Kingdom"}},
                                                     "city": {"names": {"en": "London"}}, "location": {"metro_code": 826}})
    writer.to_db_file(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--ips", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also time the per-row reference and compare bytes")
    args = parser.parse_args()

    raw = synthetic_hour(args.events, args.devices, args.agents, args.ips)
    sink = io.BytesIO()
    pq.write_table(raw, sink, compression="zstd")
    data = sink.getvalue()
    config = EnrichmentConfig(bot_max_events_per_minute=100)
    with tempfile.TemporaryDirectory() as tmp:
        geo = open_geoip(geo_db(Path(tmp) / "city.mmdb"))
        print(f"hour: {raw.num_rows:,} raw rows, {len(data):,} B Parquet, {args.agents} agents, {args.ips} IPs, "
              f"geo-IP {'on' if geo else 'off (install the test extras)'}; machine shared: compare ratios, not absolutes")
        passes, enrich = [], []
        out = b""
        for _ in range(args.repeat):  # interleaved, so load changes hit both alike
            t0 = time.perf_counter()
            to_parquet_bytes(pq.read_table(io.BytesIO(data)))
            passes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            if geo is not None:
                geo.lookup.cache_clear()
            result = enrich_hour(pq.read_table(io.BytesIO(data)), hour_start=HOUR, geo_lookup=geo, config=config)
            out = to_parquet_bytes(result.table)
            enrich.append(time.perf_counter() - t0)
        p, e = statistics.median(passes), statistics.median(enrich)
        n = raw.num_rows
        print(f"pass-through  {n / p:>12,.0f} rows/s  ({p:.3f} s median of {args.repeat})")
        print(f"enrich_hour   {n / e:>12,.0f} rows/s  ({e:.3f} s)  stats {result.stats}")
        print(f"ratio enrich / pass-through: {p / e:.2f}  (target >= 0.3)")
        if args.reference:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            import enrichment_reference as ref

            if geo is not None:
                geo.lookup.cache_clear()
            t0 = time.perf_counter()
            expected = ref.to_parquet_bytes(ref.enrich_hour(pq.read_table(io.BytesIO(data)), hour_start=HOUR,
                                                            geo_lookup=geo, config=config).table)
            r = time.perf_counter() - t0
            print(f"reference     {n / r:>12,.0f} rows/s  ({r:.3f} s)  ratio {p / r:.3f}; speed-up {r / e:.1f}x; "
                  f"byte-identical: {expected == out}")
        if geo is not None:
            geo.close()


if __name__ == "__main__":
    main()
