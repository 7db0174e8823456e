"""Loading one enriched hour into ClickHouse: client-side formats vs ``INSERT … SELECT FROM file()``, same run.

Builds a 200k-event enriched hour (bench/enrichment.py's synthetic hour through ``enrich_hour``), starts the
embedded ClickHouse-compatible server (``eventpipe chserver``, own temp dir and free port) and loads the
same rows into fresh ``events``-shaped tables, interleaved ``--repeat`` times:

* ``parquet``: the enriched Parquet file as the body (``FORMAT Parquet``; what ``load_hour`` sends);
* ``arrow``: ``client.insert_arrow`` (``FORMAT Arrow``, an Arrow IPC stream, lz4);
* ``native``: ``client.insert`` of the columns (clickhouse-connect serializes ``FORMAT Native`` in Python);
* ``file()``: ``INSERT INTO t SELECT * FROM file('<the Parquet file>', Parquet)`` run by the server itself —
  the ceiling (no HTTP body, no client work).

Prints rows/s of each and its ratio to ``file()``.

    .venv/bin/python bench/clickhouse_load.py [--events 200000] [--repeat 3] [--no-native]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import clickhouse_connect  # noqa: E402

from bench.enrichment import HOUR, synthetic_hour  # noqa: E402
from enrichment.rules import enrich_hour, to_parquet_bytes  # noqa: E402
from orchestration.clickhouse.schema import EVENT_COLUMN_NAMES, SchemaPlan, ensure_plan, quote  # noqa: E402
from tests.chserver_support import start_chserver  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-native", action="store_true", help="skip the (slow) Python Native serialization")
    args = parser.parse_args()
    table = enrich_hour(synthetic_hour(args.events, 20_000, 1_000, 5_000), hour_start=HOUR).table
    data = to_parquet_bytes(table)
    n = table.num_rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hour.parquet"
        path.write_bytes(data)
        (Path(tmp) / "home").mkdir()
        server = start_chserver(Path(tmp) / "home" / "clickhouse")
        try:
            client = clickhouse_connect.get_client(host=server.host, port=server.port, username="default", password="",
                                                   compress="lz4", send_receive_timeout=600)
            plan = SchemaPlan(f"bench_{uuid.uuid4().hex[:8]}", None, 3650)  # long TTL: the hour is back-dated
            ensure_plan(client, plan)
            columns = list(EVENT_COLUMN_NAMES)
            pydata = [table.column(c).to_pylist() for c in columns] if not args.no_native else None

            def fresh() -> str:
                name = f"load_{uuid.uuid4().hex[:8]}"
                client.command(plan.events_ddl(name, ttl=False))
                return name

            def parquet(t: str) -> None:
                client.raw_insert(f"{quote(plan.database)}.{quote(t)}", columns, insert_block=data, fmt="Parquet")

            def arrow(t: str) -> None:
                client.insert_arrow(t, pq.read_table(io.BytesIO(data)), database=plan.database)

            def native(t: str) -> None:
                client.insert(t, pydata, column_names=columns, database=plan.database, column_oriented=True)

            def file_fn(t: str) -> None:
                client.command(f"INSERT INTO {quote(plan.database)}.{quote(t)} SELECT * FROM file('{path}', Parquet)")

            methods = {"file()": file_fn, "parquet": parquet, "arrow": arrow}
            if pydata is not None:
                methods["native"] = native
            times: dict[str, list[float]] = {m: [] for m in methods}
            wrong: dict[str, int] = {}
            for _ in range(args.repeat):
                for name, fn in methods.items():
                    t = fresh()
                    t0 = time.perf_counter()
                    fn(t)
                    times[name].append(time.perf_counter() - t0)
                    count = int(client.command(f"SELECT count() FROM {quote(plan.database)}.{quote(t)}"))
                    if count != n:
                        wrong[name] = count
                    client.command(f"DROP TABLE {quote(plan.database)}.{quote(t)}")
            base = statistics.median(times["file()"])
            print(f"{n:,} rows, {len(data):,} B Parquet; chserver (chDB) over HTTP; machine shared: compare ratios")
            for name, ts in times.items():
                m = statistics.median(ts)
                print(f"{name:<8} {n / m:>12,.0f} rows/s  ({m:.3f} s median of {args.repeat})  ratio to file(): {base / m:.2f}"
                      + (f"  WRONG: the table held {wrong[name]:,} rows" if name in wrong else ""))
            client.command(f"DROP DATABASE IF EXISTS {quote(plan.database)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
