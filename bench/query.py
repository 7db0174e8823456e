"""Benchmark: the query service's queries on N events / 30 days, beside chDB in-process and DuckDB, in one run.

    .venv/bin/python bench/query.py [--events 10000000] [--repeat 7] [--partition hour|day]

Generates ``--events`` synthetic events (~1 actor per 100 events, 30 days ending 2026-01-31, 12 event
types, countries/platforms per actor) with one deterministic SQL generator run on both engines: into
``analytics.events`` of a fresh chserver (the real DDL, orchestration/clickhouse/schema.py) and of an
in-process chDB, exported from chDB to Parquet, loaded into DuckDB (table) and read by DuckDB from the
Parquet file. Then, for each query, median and p95 over ``--repeat`` runs of:

    API       the HTTP API (/api/2/…, Starlette TestClient in-process: auth, parsing, compile, run, shape)
    chserver  the compiled SQL through the service's Engine (clickhouse-connect over HTTP to chserver)
    chDB      the same compiled SQL with the same parameters run in-process on chDB
    DuckDB    the same logic written for DuckDB, on its table and on the Parquet file

Queries: segmentation uniques of one event by country × platform per day; DAU per day (``_active``);
a 3-step ordered funnel (7-day window); 30-day n-day retention (``_active`` → ``_active``; the API counts
returns up to today, so its rows carry one interval per day since the start; DuckDB's only the days with data).
DuckDB skips the insert_id deduplication (the generator makes no copies); the service always pays it.
Ratios API/chDB and API/DuckDB are printed side by side; the machine's load average is printed with them.
Also prints analytics.events bytes per event (active parts) in chserver.
The result cache's figures (cached p50 beside cold p50 of the same requests) come from bench/query_cache.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import chdb  # noqa: E402
import clickhouse_connect  # noqa: E402
import duckdb  # noqa: E402
from starlette.datastructures import QueryParams  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from eventpipe_core.metadata.secrets import create_key_with_secret  # noqa: E402
from eventpipe_core.metadata.store import MetadataStore  # noqa: E402
from eventpipe_core.settings import load_settings  # noqa: E402
from orchestration.clickhouse.schema import SchemaPlan, list_ties  # noqa: E402
from query_service import params as P  # noqa: E402
from query_service.app import create_app  # noqa: E402
from query_service.compile.funnel import compile_funnel  # noqa: E402
from query_service.compile.retention import compile_retention  # noqa: E402
from query_service.compile.segmentation import compile_segmentation  # noqa: E402
from query_service.engine import Engine  # noqa: E402
from tests.chserver_support import start_chserver  # noqa: E402

DAYS = 30
START_MS = 1767225600000 + 0  # 2026-01-01T00:00Z: the 30 days are 2026-01-01 .. 2026-01-30
TYPES = ["page_view"] * 40 + ["view_item"] * 20 + ["search"] * 10 + ["add_to_cart"] * 8 + ["click"] * 8 + \
    ["sign_up"] * 3 + ["activate"] * 3 + ["purchase"] * 2 + ["share", "login", "logout", "rate"] * 1 + ["page_view"] * 2
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "SE", "PL", "MX", "AU", "KR"]
PLATFORMS = ["iOS", "Android", "Web"]


def generator_sql(n: int) -> str:
    """One deterministic INSERT … SELECT (hash of the row number): identical rows on every engine."""
    users = max(1, n // 100)
    actor = f"concat('u', toString(cityHash64(number, 1) % {users}))"
    t = f"toInt64({START_MS} + cityHash64(number, 2) % {DAYS * 86_400_000})"
    return f"""
INSERT INTO analytics.events (event_time, event_hour, event_date, insert_id, event_type, project, user_id, device_id,
    actor_id, session_id, event_properties, user_properties, platform, os_name, country, city, language, library,
    is_bot, received_at, ingested_at, app_version)
SELECT fromUnixTimestamp64Milli(t, 'UTC') AS et, toStartOfHour(toDateTime(et, 'UTC')), toDate(et), ins, ty, 'bench',
       a, concat('d', a), a, intDiv(t, 1800000) * 1800000, props, '{{}}',
       {_pick('PLATFORMS', PLATFORMS, 'cityHash64(a, 7)')}, os, {_pick('COUNTRIES', COUNTRIES, 'cityHash64(a, 8)')},
       '', 'en', 'amplitude-js', 0, fromUnixTimestamp64Milli(t + 500, 'UTC'), fromUnixTimestamp64Milli(t + 900, 'UTC'),
       '2.1.0'
FROM (
    SELECT number, {actor} AS a, {t} AS t,
           lower(hex(cityHash64(number, 4))) || lower(hex(cityHash64(number, 5))) AS ins,
           {_pick('TYPES', TYPES, 'cityHash64(number, 3)')} AS ty,
           if(ty IN ('view_item', 'add_to_cart', 'purchase'),
              concat('{{"product":"p', toString(cityHash64(number, 6) % 500), '","price":',
                     toString(cityHash64(number, 6) % 90 + 9), '}}'),
              '{{}}') AS props,
           if(cityHash64(a, 7) % 3 = 2, 'Windows', if(cityHash64(a, 7) % 3 = 0, 'iOS', 'Android')) AS os
    FROM numbers({n})
)
SETTINGS max_partitions_per_insert_block = 0, max_insert_threads = 2"""


def _pick(_name: str, values: list[str], hash_sql: str) -> str:
    arr = "[" + ", ".join(f"'{v}'" for v in values) + "]"
    return f"{arr}[1 + {hash_sql} % {len(values)}]"


RANGE = {"start": "20260101", "end": "20260130"}
API_QUERIES: dict[str, tuple[str, dict[str, str]]] = {
    "segmentation country x platform": ("/api/2/events/segmentation", {
        **RANGE, "m": "uniques",
        "e": json.dumps({"event_type": "view_item", "group_by": [{"type": "user", "value": "country"},
                                                                 {"type": "user", "value": "platform"}]})}),
    "DAU per day": ("/api/2/events/segmentation", {**RANGE, "m": "uniques", "e": json.dumps({"event_type": "_active"})}),
    "3-step funnel (ordered, 7 d)": ("/api/2/funnels", {**RANGE, "cs": str(7 * 86400), "mode": "ordered"}),
    "30-day retention (n-day)": ("/api/2/retention", {**RANGE, "rm": "n-day", "se": json.dumps({"event_type": "_active"}),
                                                      "re": json.dumps({"event_type": "_active"})}),
}
FUNNEL_STEPS = ["sign_up", "activate", "purchase"]

DUCK_WHERE = ("project = 'bench' AND is_bot = 0 AND event_time >= TIMESTAMPTZ '2026-01-01 00:00:00+00' "
              "AND event_time < TIMESTAMPTZ '2026-01-31 00:00:00+00'")


def duck_queries(src: str) -> dict[str, str]:
    """The same logic in DuckDB SQL (dedup by insert_id: the generator makes none, so it is skipped).

    Segmentation and DAU also count the whole range's uniques per group (the API's ``seriesCollapsed``)."""
    w = 7 * 86_400_000
    return {
        "segmentation country x platform": f"""
            SELECT CAST(event_time AS DATE) AS d, country, platform, count(DISTINCT actor_id) AS u FROM {src}
            WHERE {DUCK_WHERE} AND event_type = 'view_item'
            GROUP BY GROUPING SETS ((d, country, platform), (country, platform))""",
        "DAU per day": f"""SELECT CAST(event_time AS DATE) AS d, count(DISTINCT actor_id) FROM {src}
            WHERE {DUCK_WHERE} GROUP BY GROUPING SETS ((d), ())""",
        "3-step funnel (ordered, 7 d)": f"""
            WITH e AS (
                SELECT actor_id, epoch_ms(event_time) AS t, event_type,
                       row_number() OVER (PARTITION BY actor_id ORDER BY event_time, insert_id) AS rn
                FROM {src} WHERE {DUCK_WHERE} AND event_type IN ('sign_up', 'activate', 'purchase')),
            nx AS (
                SELECT *, min(CASE WHEN event_type = 'activate' THEN rn END) OVER w AS na,
                          min(CASE WHEN event_type = 'purchase' THEN rn END) OVER w AS np
                FROM e WINDOW w AS (PARTITION BY actor_id ORDER BY rn ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)),
            paths AS (
                SELECT s.actor_id, s.t AS t0, a.t AS t2, p.t AS t3,
                       1 + (a.t IS NOT NULL AND a.t <= s.t + {w})::INT + (p.t IS NOT NULL AND p.t <= s.t + {w})::INT AS level
                FROM nx s LEFT JOIN nx a ON a.actor_id = s.actor_id AND a.rn = s.na
                          LEFT JOIN nx p ON p.actor_id = s.actor_id AND p.rn = a.np
                WHERE s.event_type = 'sign_up'),
            best AS (SELECT actor_id, arg_max(level, (level, -t0)) AS level FROM paths GROUP BY actor_id)
            SELECT count(*) FILTER (level >= 1), count(*) FILTER (level >= 2), count(*) FILTER (level >= 3) FROM best""",
        "30-day retention (n-day)": f"""
            WITH days AS (SELECT DISTINCT actor_id, CAST(event_time AS DATE) AS d FROM {src} WHERE {DUCK_WHERE}),
            cohort AS (SELECT actor_id, min(d) AS c FROM days GROUP BY actor_id)
            SELECT c, datediff('day', c, d) AS k, count(*) FROM days JOIN cohort USING (actor_id) GROUP BY ALL""",
    }


def timed(repeat: int, fns: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float]]:
    """(median, p95) wall seconds per target over ``repeat`` rounds after one warm-up round.

    Rounds are interleaved (every target once per round): on a shared, loaded machine a change of load
    hits every target alike, so the ratios stay fair.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeat + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i:
                times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = (statistics.median(ts), ts[min(len(ts) - 1, max(0, math.ceil(0.95 * len(ts)) - 1))])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--partition", choices=["hour", "day"], default=None,
                    help="analytics.events partitions (CLICKHOUSE_PARTITION; default: the settings' default)")
    args = ap.parse_args()
    n, repeat = args.events, args.repeat
    plan = SchemaPlan("analytics", None, 36500, partition=args.partition or load_settings().clickhouse_partition)
    print(f"analytics.events partitioned by {plan.partition}")

    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        local = chdb.connect(str(tmp / "local"))
        for stmt in plan.statements():
            local.query(stmt)
        local.query(generator_sql(n))
        local.query("OPTIMIZE TABLE analytics.events FINAL")
        list_ties(_Chdb(local), plan)  # the generator bypasses the loads' listing of ties (funnels rely on it)
        local.query("USE analytics")  # the compiled SQL names the table unqualified, like the engine's connection
        parquet = tmp / "events.parquet"
        local.query(f"INSERT INTO FUNCTION file('{parquet}', Parquet) SELECT * FROM analytics.events "
                    "SETTINGS output_format_parquet_compression_method = 'zstd'")
        print(f"{n:,} events generated in chDB + Parquet ({parquet.stat().st_size / n:.1f} B/event) "
              f"in {time.perf_counter() - t0:.1f}s")

        server = start_chserver(tmp / "server")
        try:
            t0 = time.perf_counter()
            admin = clickhouse_connect.get_client(host=server.host, port=server.port, username="default",
                                                  password=server.password, autogenerate_session_id=False,
                                                  send_receive_timeout=3600)
            for stmt in plan.statements():
                admin.command(stmt)
            admin.command(generator_sql(n))
            admin.command("OPTIMIZE TABLE analytics.events FINAL")
            list_ties(admin, plan)
            check = "SELECT count(), sum(cityHash64(insert_id, event_type, actor_id, event_time)) FROM analytics.events"
            remote_sum = admin.query(check).result_rows[0]
            local_sum = tuple(json.loads(local.query(check, "JSONCompact").bytes())["data"][0])
            assert [int(x) for x in remote_sum] == [int(x) for x in local_sum], (remote_sum, local_sum)
            ch_bytes = admin.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'analytics' "
                                   "AND table = 'events' AND active").result_rows[0][0]
            print(f"loaded into chserver in {time.perf_counter() - t0:.1f}s; analytics.events {ch_bytes / n:.1f} B/event")

            t0 = time.perf_counter()
            duck = duckdb.connect(str(tmp / "duck.db"))
            duck.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{parquet}')")
            print(f"DuckDB table loaded in {time.perf_counter() - t0:.1f}s")

            results = run_all(server, local, duck, parquet, tmp, repeat)
            admin.close()
        finally:
            server.stop()
        local.close()
    report(results, n, repeat)


Results = dict[str, dict[str, tuple[float, float]]]


def run_all(server: Any, local: Any, duck: Any, parquet: Path, tmp: Path, repeat: int) -> Results:
    settings = load_settings(eventpipe_home=tmp / "home", clickhouse_url=f"{server.url}/analytics",
                             clickhouse_service_password=server.service_password, clickhouse_ttl_days=36500)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    key, secret = create_key_with_secret(store, "bench")
    engine = Engine.from_settings(settings)
    scope = P.Scope(project="bench", timezone="UTC", include_bots=False)
    out: Results = {}
    with TestClient(create_app(settings, engine=engine, store=store)) as tc:
        for name, (path, qp) in API_QUERIES.items():
            params: list[tuple[str, str]] = list(qp.items())
            if path == "/api/2/funnels":
                params += [("e", json.dumps({"event_type": s})) for s in FUNNEL_STEPS]
            compiled = _compile(path, QueryParams(params), scope)

            def api(path: str = path, params: list[tuple[str, str]] = params) -> None:
                r = tc.get(path, params=params, auth=(key, secret))
                assert r.status_code == 200, r.text[:500]

            def chserver_sql(compiled: Any = compiled) -> None:
                engine.run(compiled)

            def chdb_sql(compiled: Any = compiled) -> None:
                local.query(compiled.sql, "Native", params=_chdb_params(compiled.params))

            dq = duck_queries("events")[name]
            pq = duck_queries(f"read_parquet('{parquet}')")[name]
            out[name] = timed(repeat, {
                "API": api, "chserver": chserver_sql, "chDB": chdb_sql,
                "DuckDB table": lambda dq=dq: duck.execute(dq).fetchall(),
                "DuckDB Parquet": lambda pq=pq: duck.execute(pq).fetchall(),
            })
            print(f"  {name}: " + ", ".join(f"{k} {v[0]:.3f}" for k, v in out[name].items()), flush=True)
    store.dispose()
    return out


class _Chdb:
    """``command()`` of a clickhouse-connect client, on a chDB connection (for the schema helpers)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def command(self, sql: str, parameters: dict[str, Any] | None = None, settings: Any = None) -> None:
        self.conn.query(sql, params=_chdb_params(parameters or {}))


def _compile(path: str, qp: QueryParams, scope: P.Scope) -> Any:
    if path.endswith("segmentation"):
        return compile_segmentation(P.parse_segmentation(qp, scope))
    if path.endswith("funnels"):
        return compile_funnel(P.parse_funnel(qp, scope))
    return compile_retention(P.parse_retention(qp, scope))


def _chdb_params(params: dict[str, Any]) -> dict[str, str]:
    """chDB takes query parameters as text, like ClickHouse's ``param_*`` (arrays as ClickHouse literals)."""
    def text(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ", ".join("'" + str(x).replace("\\", "\\\\").replace("'", "\\'") + "'" if isinstance(x, str)
                                   else str(x) for x in v) + "]"
        return str(v)
    return {k: text(v) for k, v in params.items()}


def report(results: Results, n: int, repeat: int) -> None:
    cols = ["API", "chserver", "chDB", "DuckDB table", "DuckDB Parquet"]
    print(f"\n{n:,} events / {DAYS} days, median / p95 seconds over {repeat} runs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"{'query':34}" + "".join(f"{c:>17}" for c in cols) + f"{'API/chDB':>10}{'API/Duck':>10}")
    for name, r in results.items():
        cells = "".join(f"{r[c][0]:>8.3f}/{r[c][1]:<8.3f}" for c in cols)
        print(f"{name:34}{cells}{r['API'][1] / r['chDB'][1]:>10.2f}{r['API'][1] / r['DuckDB table'][1]:>10.2f}")
    print("ratios: p95 of the API over p95 of chDB in-process (same SQL) / of the DuckDB table (same logic)")


if __name__ == "__main__":
    main()
