"""Golden tests: project time zones on both DST changes of Europe/Berlin and America/New_York.

Local calendar days are 23 or 25 hours long on those dates; with one event per UTC hour, a day's total
is the number of hours it has. Retention days are local days too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import clickhouse_connect
import pytest

from query_service import params as P
from query_service.compile import retention as R
from query_service.compile import segmentation as S
from query_service.engine import Engine
from tests.chserver_support import ChServer
from tests.query_support import insert_append

H = 3_600_000
CASES = [  # (zone, the change day, hours of the days before / of / after it)
    ("Europe/Berlin", date(2026, 3, 29), [24, 23, 24]),
    ("Europe/Berlin", date(2026, 10, 25), [24, 25, 24]),
    ("America/New_York", date(2026, 3, 8), [24, 23, 24]),
    ("America/New_York", date(2026, 11, 1), [24, 25, 24]),
]


@pytest.fixture(scope="module")
def ch(chserver: ChServer) -> Iterator[tuple[Any, Engine]]:
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="",
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="",
                                           database="analytics", autogenerate_session_id=False)
    from orchestration.clickhouse.schema import SchemaPlan, ensure_plan
    from tests.query_support import TTL_DAYS

    ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    yield client, Engine(chserver.host, chserver.port, "reader", "reader", "analytics")


def _ms(zone: str, *args: int) -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC).timestamp() * 1000)


@pytest.mark.parametrize(("zone", "day", "hours"), CASES)
def test_local_days_at_dst_changes(ch: tuple[Any, Engine], zone: str, day: date, hours: list[int]) -> None:
    client, engine = ch
    project = f"tz-{zone.replace('/', '-')}-{day:%Y%m%d}"
    first = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000) - 3 * 24 * H
    insert_append(client, [{"time": first + i * H, "insert_id": f"h{i}", "event_type": "tick", "actor_id": "a"}
                           for i in range(7 * 24)], project)
    q = P.SegmentationQuery(scope=P.Scope(project, zone), events=(P.EventSpec("tick"),), metric="totals",
                            range=P.DateRange(date.fromordinal(day.toordinal() - 1), date.fromordinal(day.toordinal() + 1)))
    data = S.shape(q, engine.run(S.compile_segmentation(q)).rows)
    assert data["series"] == [hours]
    # hourly buckets of the change day: 23 labels in spring; in autumn the repeated local hour is one label
    # holding both UTC hours (24 labels, one with 2 events)
    qh = P.SegmentationQuery(scope=P.Scope(project, zone), events=(P.EventSpec("tick"),), metric="totals",
                             range=P.DateRange(day, day), interval="hour")
    hourly = S.shape(qh, engine.run(S.compile_segmentation(qh)).rows)
    assert len(hourly["xValues"]) == min(hours[1], 24)
    assert sum(hourly["series"][0]) == hours[1]
    assert sorted(hourly["series"][0])[-1] == (2 if hours[1] == 25 else 1)


@pytest.mark.parametrize(("zone", "day", "hours"), CASES)
def test_retention_days_are_local(ch: tuple[Any, Engine], zone: str, day: date, hours: list[int]) -> None:
    """Local 00:30 and 23:30 of the change day are one day (23 or 25 h apart in UTC); 00:10 the next day is day 1."""
    client, engine = ch
    project = f"ret-{zone.replace('/', '-')}-{day:%Y%m%d}"
    y, m, d = day.year, day.month, day.day
    nxt = date.fromordinal(day.toordinal() + 1)
    events = [
        {"time": _ms(zone, y, m, d, 0, 30), "insert_id": "1", "event_type": "open", "actor_id": "a"},
        {"time": _ms(zone, y, m, d, 23, 30), "insert_id": "2", "event_type": "open", "actor_id": "a"},
        {"time": _ms(zone, nxt.year, nxt.month, nxt.day, 0, 10), "insert_id": "3", "event_type": "open", "actor_id": "b0"},
        {"time": _ms(zone, y, m, d, 23, 59), "insert_id": "4", "event_type": "open", "actor_id": "b0"},
        {"time": _ms(zone, nxt.year, nxt.month, nxt.day, 23, 59), "insert_id": "5", "event_type": "open", "actor_id": "a"},
    ]
    insert_append(client, events, project)
    q = P.RetentionQuery(scope=P.Scope(project, zone), start_event=P.EventSpec("_new"), return_event=P.EventSpec("_all"),
                         range=P.DateRange(day, nxt), today=date.fromordinal(day.toordinal() + 3))
    values = R.shape(q, engine.run(R.compile_retention(q)).rows)["series"][0]["values"]
    assert [c["count"] for c in values[day.isoformat()]][:3] == [2, 2, 0]  # a and b0 start on the day, both return on day 1
    assert values[nxt.isoformat()][0]["count"] == 0
