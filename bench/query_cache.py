"""Benchmark: the query service's Redis result cache — cached p50 beside cold p50 for the same queries, one run.

    python bench/query_cache.py [--days 30] [--events 30000] [--repeat 15] [--redis redis://127.0.0.1:6379/0]

Starts ``eventpipe chserver`` on a free port and a temp data dir, loads ``--events`` synthetic events of one project
over ``--days`` days (the project's hour loader), serves the query API on loopback (uvicorn, one worker) with the
cache on the given Redis (its own key prefix, deleted afterwards), then for each query (segmentation, group-by,
funnel, retention, users) times ``--repeat`` requests over HTTP keep-alive:

* cold: ``refresh=force`` (always computed on ClickHouse);
* cached: the plain request after one warm-up (a hit: versions + GET in Redis, no ClickHouse).

Prints per query and overall p50s and the cold/cached ratio; the goal is a cached p50 <= 10 ms. Not a test: figures
depend on the machine. (bench/query.py, separate, measures the query engine itself.)
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import clickhouse_connect  # noqa: E402
import httpx  # noqa: E402
import redis  # noqa: E402
import uvicorn  # noqa: E402

from eventpipe_core.metadata import MetadataStore  # noqa: E402
from eventpipe_core.metadata.secrets import create_key_with_secret  # noqa: E402
from eventpipe_core.settings import load_settings  # noqa: E402
from query_service.app import create_app  # noqa: E402
from tests.chserver_support import start_chserver  # noqa: E402
from tests.query_support import TTL_DAYS, load_events  # noqa: E402

DAY0 = 1767225600000  # 2026-01-01T00:00Z
DAY_MS = 86_400_000


def queries(days: int) -> dict[str, tuple[str, dict[str, str]]]:
    end = time.strftime("%Y%m%d", time.gmtime((DAY0 + (days - 1) * DAY_MS) / 1000))
    rng = {"start": "20260101", "end": end}
    view, buy = json.dumps({"event_type": "view"}), json.dumps({"event_type": "buy"})
    return {
        "segmentation uniques": ("/api/2/events/segmentation", {"e": view, **rng}),
        "segmentation by country": ("/api/2/events/segmentation", {"e": view, "m": "totals", "g": "country", **rng}),
        "funnel view>buy": ("/api/2/funnels", {"e": [view, buy], **rng}),  # type: ignore[dict-item]
        "retention": ("/api/2/retention", {"se": view, "re": buy, **rng}),
        "users active": ("/api/2/users", {"m": "active", **rng}),
    }


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    prefix = f"bench:qcache:{uuid.uuid4().hex[:8]}:"
    rds = redis.Redis.from_url(args.redis)
    rds.ping()

    with tempfile.TemporaryDirectory(prefix="qcache-bench-") as tmp:
        server = start_chserver(Path(tmp) / "server")
        srv = None
        try:
            settings = load_settings(
                eventpipe_home=Path(tmp) / "home", clickhouse_url=server.clickhouse_url,
                clickhouse_service_password=server.service_password, clickhouse_ttl_days=TTL_DAYS,
                lake_url=f"file://{server.data_dir.parent / 'lake'}", redis_url=args.redis,
                query_redis_prefix=f"{prefix}q:", data_versions_prefix=f"{prefix}dv:",
                query_limit_hourly_cost=10**9, query_limit_running_cost=10**9)  # measure, do not throttle
            admin = clickhouse_connect.get_client(host=server.host, port=server.port, username="default",
                                                  password=server.password, autogenerate_session_id=False)
            admin.command("CREATE DATABASE IF NOT EXISTS analytics")
            ch = clickhouse_connect.get_client(host=server.host, port=server.port, username="default",
                                               password=server.password, database="analytics", autogenerate_session_id=False)
            span = args.days * DAY_MS
            events = [{"time": DAY0 + (i * 7919 * 1000) % span, "insert_id": f"e{i}", "actor_id": f"u{i % 3000}",
                       "event_type": "buy" if i % 5 == 0 else "view", "country": ["DE", "FR", "US", "BR"][i % 4]}
                      for i in range(args.events)]
            t0 = time.perf_counter()
            load_events(ch, events, "bench")
            print(f"loaded {len(events)} events over {args.days} days in {time.perf_counter() - t0:.1f}s")
            store = MetadataStore(settings.metadata_db_url or "")
            store.ensure_schema()
            auth = create_key_with_secret(store, "bench")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            srv = uvicorn.Server(uvicorn.Config(create_app(settings, store=store), host="127.0.0.1", port=port,
                                                log_level="warning", lifespan="off"))
            threading.Thread(target=srv.run, daemon=True).start()
            while not srv.started:
                time.sleep(0.05)
            cold_all, hot_all = [], []
            print(f"{'query':<26} {'cold p50 ms':>12} {'cached p50 ms':>14} {'ratio':>8}")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=auth, timeout=120) as client:
                for name, (path, params) in queries(args.days).items():
                    cold, hot = [], []
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        r = client.get(path, params={**params, "refresh": "force"})
                        cold.append(time.perf_counter() - t)
                        assert r.status_code == 200 and r.json()["is_cached"] is False, r.text
                    client.get(path, params=params)
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        r = client.get(path, params=params)
                        hot.append(time.perf_counter() - t)
                        assert r.status_code == 200 and r.json()["is_cached"] is True, r.text
                    cold_all += cold
                    hot_all += hot
                    print(f"{name:<26} {p50(cold):>12.1f} {p50(hot):>14.2f} {p50(cold) / p50(hot):>7.0f}x")
            print(f"{'all':<26} {p50(cold_all):>12.1f} {p50(hot_all):>14.2f} {p50(cold_all) / p50(hot_all):>7.0f}x"
                  f"   (goal: cached p50 <= 10 ms: {'met' if p50(hot_all) <= 10 else 'NOT met'})")
            store.dispose()
        finally:
            if srv is not None:
                srv.should_exit = True
            server.stop()
            for key in rds.scan_iter(f"{prefix}*"):
                rds.delete(key)


if __name__ == "__main__":
    main()
