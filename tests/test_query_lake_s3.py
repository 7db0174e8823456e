"""Routing to an ``s3://`` lake: days past the TTL are read with ``s3()`` from the moto S3 server, as chserver's
``query_service`` user (allowed ``s3()`` only under LAKE_URL), and answers equal the same queries all-hot."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from enrichment.lake_io import enriched_key
from enrichment.rules import to_parquet_bytes
from eventpipe_core.lake_store import s3_client
from eventpipe_core.settings import load_settings
from query_service import params as P
from query_service.compile import lifecycle as LC
from query_service.compile import segmentation as S
from query_service.compile import sessions as SS
from query_service.engine import Engine, lake_location
from query_service.params_insights import LifecycleQuery, SessionsQuery
from tests.chserver_support import ChServer, start_chserver
from tests.conftest import AWS_TEST_KEYS
from tests.query_support import TTL_DAYS, enriched_rows, insert_append

H = 3_600_000


@pytest.fixture(scope="module")
def s3_lake(tmp_path_factory: pytest.TempPathFactory, s3_server: str, s3_bucket: str) -> Iterator[tuple[ChServer, Any]]:
    """A chserver whose LAKE_URL is the moto bucket (its service user may read s3() there only)."""
    lake_url = f"s3://{s3_bucket}/lake-q"
    env = {"LAKE_URL": lake_url, "AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    server = start_chserver(tmp_path_factory.mktemp("chs3") / "clickhouse", extra_env=env)
    try:
        yield server, load_settings(lake_url=lake_url, aws_endpoint_url=s3_server, **AWS_TEST_KEYS)
    finally:
        server.stop()


def _events(today: datetime) -> list[dict[str, Any]]:
    rng = random.Random(3)
    start = int((today - timedelta(days=4)).timestamp() * 1000)
    out = []
    for i in range(500):
        t = start + rng.randrange(0, 5 * 24 * H - 1)
        out.append({"time": t, "insert_id": f"s{i}", "event_type": rng.choice(["a", "b"]), "actor_id": f"u{rng.randrange(30)}",
                    "session_id": t - t % H, "is_bot": int(rng.random() < 0.05)})
    return out


def test_s3_lake_split_equals_all_hot(s3_lake: tuple[ChServer, Any], tmp_path: Path) -> None:
    server, settings = s3_lake
    admin = clickhouse_connect.get_client(host=server.host, port=server.port, username="default", password=server.password,
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=server.host, port=server.port, username="default", password=server.password,
                                           database="analytics", autogenerate_session_id=False)
    from orchestration.clickhouse.schema import SchemaPlan, ensure_plan

    ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = _events(today)
    insert_append(client, events, "hot")
    s3 = s3_client(settings)
    bucket = settings.lake_url.split("/")[2]
    by_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_hour[e["time"] // H].append(e)
    for hour, evs in by_hour.items():  # the lake has every hour, ClickHouse only today
        key = "lake-q/" + enriched_key(datetime.fromtimestamp(hour * 3600, UTC))
        s3.put_object(Bucket=bucket, Key=key, Body=to_parquet_bytes(enriched_rows(evs, "split")))
    insert_append(client, [e for e in events if e["time"] >= int(today.timestamp() * 1000)], "split")

    lake_path, creds = lake_location(settings)
    assert lake_path is not None and lake_path.startswith("http://") and creds == ("testing", "testing")
    engine = Engine(server.host, server.port, "reader", "reader", "analytics", lake_user="query_service",
                    lake_password=server.service_password, lake_path=lake_path, ttl_days=1, lake_s3_credentials=creds)
    hot_from = engine.hot_from(today.date())
    rng = P.DateRange(today.date() - timedelta(days=4), today.date())

    def answers(project: str, routed: bool) -> list[Any]:
        scope = P.Scope(project, "Europe/Berlin", hot_from=hot_from if routed else None,
                        lake_path=lake_path if routed else None)
        seg = P.SegmentationQuery(scope=scope, events=(P.EventSpec("_active"), P.EventSpec("b")), range=rng, metric="totals")
        life = LifecycleQuery(scope=scope, event=P.EventSpec("a"), range=rng)
        sess = SessionsQuery(scope=scope, range=rng)
        out = []
        for compiled, shape in ((S.compile_segmentation(seg), lambda r: S.shape(seg, r)),
                                (LC.compile_lifecycle(life), lambda r: LC.shape_lifecycle(life, r)),
                                (SS.compile_peruser(sess), lambda r: SS.shape_peruser(sess, r))):
            assert compiled.reads_lake == routed
            assert "testing" not in str(compiled.params)  # the keys are bound by the engine only
            out.append(shape(engine.run(compiled).rows))
        return out

    hot = answers("hot", routed=False)
    assert sum(hot[0]["series"][0]) > 400
    assert answers("split", routed=True) == hot
    assert answers("split", routed=False) != hot  # without routing, the split project really lacks the old days
    # days with no lake files at all (an empty glob) read as empty, not as an error
    old_range = P.DateRange(today.date() - timedelta(days=40), today.date() - timedelta(days=30))
    scope = P.Scope("split", "UTC", hot_from=hot_from, lake_path=lake_path)
    empty = P.SegmentationQuery(scope=scope, events=(P.EventSpec("_active"),), range=old_range, metric="totals")
    assert S.shape(empty, engine.run(S.compile_segmentation(empty)).rows)["series"] == [[0] * 11]
