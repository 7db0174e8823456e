"""Query cost limits shared across workers in Redis (real Redis at 127.0.0.1:6379), and a bounded loopback load test
on a real uvicorn server: 40 concurrent costly queries of one project -> some 429 (naming the limit, Retry-After),
none 5xx, while a cheap query of another project answers normally."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import clickhouse_connect
import httpx
import pytest

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from query_service import params as P
from query_service.app import create_app
from query_service.limits import QueryLimiter, Refused, query_cost, sessions_cost, sql_cost
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, load_events
from tests.redis_support import REDIS_URL, scratch_prefix


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    yield from scratch_prefix("qlimits")


def test_cost_model() -> None:
    scope = P.Scope("p")
    rng = P.DateRange(date(2026, 1, 1), date(2026, 1, 30))  # 30 days
    f = P.PropFilter(P.Prop("user", "country"), "is", ("DE",))
    seg = P.SegmentationQuery(scope, (P.EventSpec("a", (f, f)), P.EventSpec("b")), rng, segments=(f,),
                              group_by=(P.Prop("user", "country"),))
    assert query_cost(seg) == 30 * 3 * (2 + 4)  # days x conditions x (per event, +4 per group-by)
    assert query_cost(P.SegmentationQuery(scope, (P.EventSpec("a"),), rng)) == 30  # no filter counts as one condition
    fun = P.FunnelQuery(scope, (P.EventSpec("a"), P.EventSpec("b"), P.EventSpec("c", (f,))), rng,
                        group_by=(P.Prop("user", "os"),))
    assert query_cost(fun) == 30 * 1 * (3 * 2 + 4)
    ret = P.RetentionQuery(scope, P.EventSpec("a"), P.EventSpec("b"), rng, segments=(f, f))
    assert query_cost(ret) == 30 * 2 * 8
    assert query_cost(P.UsersQuery(scope, rng)) == 30
    assert sessions_cost(30, 0) == 30 * 4
    assert sql_cost(2_500_000, 1_000_000) == 3 and sql_cost(0, 1_000_000) == 1


def test_limits_are_shared_across_workers(redis_prefix: str) -> None:
    """Two limiters (as two workers) on one Redis: the caps hold for the project overall; leases free their share."""
    import redis.asyncio as aioredis

    async def go() -> None:
        client = aioredis.from_url(REDIS_URL)
        w1 = QueryLimiter(lambda: client, f"{redis_prefix}a:", 1000, 36_000, 5, lease_s=60)
        w2 = QueryLimiter(lambda: client, f"{redis_prefix}a:", 1000, 36_000, 5, lease_s=60)
        leases = [await (w1 if i % 2 else w2).acquire("p1", 10) for i in range(5)]
        assert all(isinstance(x, str) for x in leases)
        refused = await w2.acquire("p1", 10)
        assert isinstance(refused, Refused) and refused.limit == "concurrent" and refused.retry_after >= 1
        assert isinstance(await w1.acquire("p2", 10), str)  # another project is not limited by p1
        await w1.release("p1", leases[0])
        assert isinstance(await w2.acquire("p1", 10), str)
        # running cost: 600 + 500 > 1000 at once
        big = await w1.acquire("p3", 600)
        refused = await w2.acquire("p3", 500)
        assert isinstance(refused, Refused) and refused.limit == "running_cost" and "1000" in refused.message
        await w1.release("p3", big)
        ok = await w2.acquire("p3", 500)
        assert isinstance(ok, str)
        await w2.release("p3", ok)
        # hourly: a cap of 1200 per hour; 500 + 500 started, the next 500 waits for the hour to slide
        h1 = QueryLimiter(lambda: client, f"{redis_prefix}h:", 1000, 1200, 5, lease_s=60)
        for _ in range(2):
            await h1.release("p4", await h1.acquire("p4", 500))
        refused = await h1.acquire("p4", 500)
        assert isinstance(refused, Refused) and refused.limit == "hourly_cost"
        assert 3000 <= refused.retry_after <= 3661
        # a query costing more than a cap alone is charged the cap: it runs when nothing else does
        alone = await w1.acquire("p5", 5000)
        assert isinstance(alone, str)
        assert isinstance(await w1.acquire("p5", 1), Refused)
        await w1.release("p5", alone)
        # a lease ends by itself (a worker died mid-query)
        short = QueryLimiter(lambda: client, f"{redis_prefix}s:", 1000, 36_000, 1, lease_s=0.3)
        assert isinstance(await short.acquire("p6", 1), str)
        assert isinstance(await short.acquire("p6", 1), Refused)
        await asyncio.sleep(0.5)
        assert isinstance(await short.acquire("p6", 1), str)
        await client.aclose()

    asyncio.run(go())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory, redis_prefix: str) -> Iterator[dict[str, Any]]:
    import uvicorn

    home = tmp_path_factory.mktemp("qlimits")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url,
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}", redis_url=REDIS_URL,
                             query_redis_prefix=f"{redis_prefix}q:", data_versions_prefix=f"{redis_prefix}dv:")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, autogenerate_session_id=False)
    client.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, database="analytics", autogenerate_session_id=False)
    busy, calm = f"ql{uuid.uuid4().hex[:8]}", f"qm{uuid.uuid4().hex[:8]}"
    t0 = 1741564800000  # 2025-03-10
    load_events(client, [{"time": t0 + i * 3_600_000 * 5, "insert_id": f"{busy}{i}", "actor_id": f"u{i % 9}",
                          "event_type": "view", "country": ["DE", "FR"][i % 2]} for i in range(200)], busy)
    load_events(client, [{"time": t0 + 7, "insert_id": f"{calm}0", "actor_id": "c1", "event_type": "view"}], calm)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    busy_auth, calm_auth = create_key_with_secret(store, busy), create_key_with_secret(store, calm)
    app = create_app(settings, store=store)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "busy": busy_auth, "calm": calm_auth}
    srv.should_exit = True
    thread.join(10)
    store.dispose()


def test_load_costly_queries_get_429_never_5xx(server: dict[str, Any]) -> None:
    """40 distinct costly queries at once (60 days x 3 conditions x (1 event + 4 for the group-by) = 900 each: the
    running-cost cap of 1000 admits one at a time) -> some 429 naming the limit with Retry-After, no 5xx; a cheap query
    of another project answers 200 meanwhile."""

    def costly(i: int) -> dict[str, str]:
        e = {"event_type": "view", "filters": [
            {"subprop_type": "user", "subprop_key": "country", "subprop_op": "is not", "subprop_value": [f"X{i}"]},
            {"subprop_type": "event", "subprop_key": "k", "subprop_op": "is not", "subprop_value": [f"v{i}"]}]}
        return {"e": json.dumps(e), "s": json.dumps([{"prop": "platform", "op": "is not", "values": ["none"]}]),
                "g": "country", "start": "20250301", "end": "20250429"}

    async def go() -> tuple[list[httpx.Response], httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server["url"], timeout=60, limits=limits) as client:
            busy = [asyncio.create_task(client.get("/api/2/events/segmentation", params=costly(i), auth=server["busy"]))
                    for i in range(40)]
            await asyncio.sleep(0.05)
            cheap = await client.get("/api/2/events/segmentation", auth=server["calm"], params={
                "e": json.dumps({"event_type": "view"}), "start": "20250310", "end": "20250310", "m": "totals"})
            return list(await asyncio.gather(*busy)), cheap

    answers, cheap = asyncio.run(go())
    codes = [r.status_code for r in answers]
    assert not [c for c in codes if c >= 500], codes
    assert set(codes) <= {200, 429}, codes
    refused = [r for r in answers if r.status_code == 429]
    assert refused and codes.count(200) >= 1, codes
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["limit"] in ("running_cost", "concurrent") and "query limit" in r.json()["error"]
    assert cheap.status_code == 200 and cheap.json()["data"]["series"] == [[1]]
