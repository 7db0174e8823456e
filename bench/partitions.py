"""Benchmark: analytics.events partitioned by hour (``CLICKHOUSE_PARTITION=hour``), by day (the single-server
default) and by month (not offered: no load could replace an hour in it cheaply), the same rows in each, side by side in one chDB.

    .venv/bin/python bench/partitions.py [--events 10000000] [--repeat 5]

Rows come from bench/query.py's deterministic generator (30 days, ~1 actor per 100 events), copied into
the three tables and merged (OPTIMIZE FINAL). Prints bytes per event and part counts, then for each of
bench/query.py's queries (the service's compiled SQL: segmentation by country × platform, DAU, 3-step
funnel, 30-day retention) the median / p95 seconds per layout over ``--repeat`` interleaved rounds, and the
cost a day layout pays instead: one hour load's rewrite of a day (the day's other hours copied into a fresh
table, then REPLACE PARTITION), timed on the same data.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import chdb  # noqa: E402
import query as Q  # noqa: E402  (bench/query.py: generator, queries, compile, timing)
from starlette.datastructures import QueryParams  # noqa: E402

from orchestration.clickhouse.schema import EVENT_COLUMN_NAMES, SchemaPlan  # noqa: E402
from query_service import params as P  # noqa: E402

LAYOUTS = {"hour": "event_hour", "day": "toYYYYMMDD(event_hour)", "month": "toYYYYMM(event_hour)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.events
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        conn = chdb.connect(str(Path(tmp) / "db"))
        t0 = time.perf_counter()
        for layout, key in LAYOUTS.items():
            plan = SchemaPlan(f"p_{layout}", None, 36500)
            for stmt in plan.statements():
                conn.query(stmt.replace("PARTITION BY event_hour", f"PARTITION BY {key}"))
        conn.query(Q.generator_sql(n).replace("INSERT INTO analytics.events", "INSERT INTO p_hour.events"))
        for layout in LAYOUTS:
            if layout != "hour":
                conn.query(f"INSERT INTO p_{layout}.events SELECT * FROM p_hour.events "
                           "SETTINGS max_partitions_per_insert_block = 0")
            conn.query(f"OPTIMIZE TABLE p_{layout}.events FINAL")
        print(f"{n:,} events in 3 layouts in {time.perf_counter() - t0:.0f}s")
        for layout in LAYOUTS:
            size, parts = json.loads(conn.query(
                f"SELECT sum(bytes_on_disk), count() FROM system.parts WHERE database = 'p_{layout}' "
                "AND table = 'events' AND active", "JSONCompact").bytes())["data"][0]
            print(f"  {layout:6} {int(size) / n:6.1f} B/event, {int(parts)} parts")

        scope = P.Scope(project="bench", timezone="UTC", include_bots=False)
        results = {}
        for name, (path, qp) in Q.API_QUERIES.items():
            params = list(qp.items())
            if path == "/api/2/funnels":
                params += [("e", json.dumps({"event_type": s})) for s in Q.FUNNEL_STEPS]
            compiled = Q._compile(path, QueryParams(params), scope)
            chparams = Q._chdb_params(compiled.params)

            def run(layout: str, sql: str = compiled.sql, chparams: dict = chparams) -> None:
                conn.query(f"USE p_{layout}")
                conn.query(sql, "Native", params=chparams)

            results[name] = Q.timed(args.repeat, {layout: (lambda lay=layout: run(lay)) for layout in LAYOUTS})
            print(f"  {name}: " + ", ".join(f"{k} {v[0]:.3f}" for k, v in results[name].items()), flush=True)

        cols = ", ".join(EVENT_COLUMN_NAMES)
        day, hour = 20260115, 1768471200  # 2026-01-15 10:00 UTC: the rest of its day is copied
        rewrite = []
        for _ in range(3):
            conn.query("DROP TABLE IF EXISTS p_day.rewrite")
            conn.query("CREATE TABLE p_day.rewrite AS p_day.events")
            t = time.perf_counter()
            conn.query(f"INSERT INTO p_day.rewrite ({cols}) SELECT {cols} FROM p_day.events "
                       f"WHERE toYYYYMMDD(event_hour) = {day} AND toUInt32(event_hour) != {hour}")
            conn.query(f"INSERT INTO p_day.rewrite ({cols}) SELECT {cols} FROM p_hour.events "
                       f"WHERE toUInt32(event_hour) = {hour}")  # the 'staged' hour
            conn.query(f"ALTER TABLE p_day.events REPLACE PARTITION ID '{day}' FROM p_day.rewrite")
            rewrite.append(time.perf_counter() - t)
        day_rows = int(conn.query(f"SELECT count() FROM p_day.events WHERE toYYYYMMDD(event_hour) = {day}", "CSV")
                       .bytes().decode())
        conn.close()

    print(f"\n{n:,} events / {Q.DAYS} days in chDB, median / p95 seconds over {args.repeat} interleaved rounds")
    print(f"{'query':34}" + "".join(f"{k:>17}" for k in LAYOUTS) + f"{'day/hour':>10}")
    for name, r in results.items():
        print(f"{name:34}" + "".join(f"{r[k][0]:>8.3f}/{r[k][1]:<8.3f}" for k in LAYOUTS)
              + f"{r['day'][1] / r['hour'][1]:>10.2f}")
    print(f"day layout: one hour load rewrites its day ({day_rows:,} rows) in {sorted(rewrite)[1]:.2f}s (median of 3)")


if __name__ == "__main__":
    main()
