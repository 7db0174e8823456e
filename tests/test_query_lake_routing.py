"""Routing: days past the ClickHouse TTL are read from the enriched lake (``file()``), transparently.

With a 1-day TTL only today's events are still in ``analytics.events`` (what the TTL keeps is what is loaded);
the lake holds every hour as the pipeline writes it (``enriched/events/event_date=…/event_hour=…/part-00000.parquet``).
A 5-day funnel, segmentation and retention over the split source must equal the same queries with every
event in ClickHouse.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from enrichment.lake_io import enriched_key
from enrichment.rules import to_parquet_bytes
from query_service import params as P
from query_service.compile import funnel as F
from query_service.compile import retention as R
from query_service.compile import segmentation as S
from query_service.engine import Engine
from tests.chserver_support import ChServer
from tests.query_support import enriched_rows, insert_append

H = 3_600_000


def _events(today: datetime, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = int((today - timedelta(days=4)).timestamp() * 1000)
    out = []
    for i in range(600):
        out.append({"time": start + rng.randrange(0, 5 * 24 * H - 1), "insert_id": f"r{i}",
                    "event_type": rng.choice(["a", "a", "b", "c", "x"]), "actor_id": f"u{rng.randrange(40)}",
                    "is_bot": int(rng.random() < 0.05)})
    return out


@pytest.mark.parametrize("query", ["funnel", "segmentation", "retention"])
def test_split_source_equals_all_hot(chserver: ChServer, tmp_path: Path, query: str) -> None:
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="",
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="",
                                           database="analytics", autogenerate_session_id=False)
    from orchestration.clickhouse.schema import SchemaPlan, ensure_plan
    from tests.query_support import TTL_DAYS

    ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    events = _events(today, seed=len(query))
    hot_p, split_p = f"hot-{query}-{tmp_path.name[-6:]}", f"split-{query}-{tmp_path.name[-6:]}"
    insert_append(client, events, hot_p)

    engine = Engine(chserver.host, chserver.port, "reader", "reader", "analytics", lake_user="default",
                    lake_path=str(tmp_path), ttl_days=1)
    hot_from = engine.hot_from(today.date())
    assert hot_from == today.date()
    by_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_hour[e["time"] // H].append(e)
    for hour, evs in by_hour.items():  # the lake has every hour ...
        key = enriched_key(datetime.fromtimestamp(hour * 3600, UTC))
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(to_parquet_bytes(enriched_rows(evs, split_p)))
    cutoff = int(today.timestamp() * 1000)
    insert_append(client, [e for e in events if e["time"] >= cutoff], split_p)  # ... ClickHouse only today

    rng = P.DateRange(today.date() - timedelta(days=4), today.date())

    def run(project: str, routed: bool) -> Any:
        scope = P.Scope(project, "Europe/Berlin", hot_from=hot_from if routed else None,
                        lake_path=str(tmp_path) if routed else None)
        if query == "funnel":
            q = P.FunnelQuery(scope=scope, steps=(P.EventSpec("a"), P.EventSpec("b"), P.EventSpec("c")), range=rng,
                              window_s=2 * 86_400)
            compiled = F.compile_funnel(q)
            shaped = F.shape(q, engine.run(compiled).rows)
        elif query == "segmentation":
            q = P.SegmentationQuery(scope=scope, events=(P.EventSpec("_active"), P.EventSpec("b")), range=rng, metric="totals")
            compiled = S.compile_segmentation(q)
            shaped = S.shape(q, engine.run(compiled).rows)
        else:
            q = P.RetentionQuery(scope=scope, start_event=P.EventSpec("_new"), return_event=P.EventSpec("_all"),
                                 range=rng, mode="rolling", today=today.date())
            compiled = R.compile_retention(q)
            shaped = R.shape(q, engine.run(compiled).rows)
        assert compiled.reads_lake == routed
        return shaped

    hot = run(hot_p, routed=False)
    assert run(split_p, routed=True) == hot
    assert run(split_p, routed=False) != hot  # without routing, the split project really lacks the old days
