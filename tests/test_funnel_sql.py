"""The shared funnel functions (eventpipe_core/funnel_sql.py) on chserver against a pure-Python reference.

The reference is written from the module docstring's rules (the same as tests/query_reference.py's
``_path``, plus hold-constant keys and events matching several steps); the functions are created by the
schema setup and called by the read-only user, as the API, the marts and FUNNEL() call them.
"""

from __future__ import annotations

from typing import Any

import clickhouse_connect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventpipe_core.funnel_sql import funnel_paths_expr
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan
from tests.chserver_support import READER, ChServer


def reference(t: list[int], m: list[int], h: list[int], n: int, w: int, mode: str) -> list[list[int]]:
    out: list[list[int]] = []
    for i0 in range(len(t)):
        if not m[i0] & 1:
            out.append([])
            continue
        t0, times = t[i0], [t[i0]]
        later = [j for j in range(i0 + 1, len(t)) if h[j] == h[i0] or mode == "sequential"]
        if mode == "unordered":
            firsts = [min((t[j] for j in later if m[j] >> k & 1 and t[j] <= t0 + w), default=None) for k in range(1, n)]
            out.append(sorted(times + [x for x in firsts if x is not None]))
            continue
        for j in later:
            if len(times) == n:
                break
            if m[j] >> len(times) & 1 and t[j] <= t0 + w and h[j] == h[i0]:
                times.append(t[j])
            elif mode == "sequential":
                break
        out.append(times)
    return out


@pytest.fixture(scope="module")
def reader(chserver: ChServer) -> Any:
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                          password=chserver.password, autogenerate_session_id=False)
    ensure_plan(admin, SchemaPlan("analytics", None, 36500))  # creates the functions with the schema
    return clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username=READER[0], password=READER[1],
                                         autogenerate_session_id=False)


@st.composite
def actor(draw: st.DrawFn) -> tuple[list[int], list[int], list[int], int, int]:
    n = draw(st.integers(1, 4))
    size = draw(st.integers(0, 14))
    t = sorted(draw(st.lists(st.integers(0, 30), min_size=size, max_size=size)))  # ties are frequent
    m = draw(st.lists(st.integers(0, (1 << n) - 1), min_size=size, max_size=size))
    h = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size)) if draw(st.booleans()) else [0] * size
    return t, m, h, n, draw(st.integers(0, 12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=actor())
def test_functions_match_reference(reader: Any, a: tuple[list[int], list[int], list[int], int, int]) -> None:
    t, m, h, n, w = a
    exprs = [funnel_paths_expr(mode, "{t:Array(Int64)}", "{m:Array(UInt64)}", "{n:UInt8}", "{w:Int64}", "{h:Array(UInt8)}")
             for mode in ("ordered", "unordered", "sequential")]
    row = reader.query(f"SELECT {', '.join(exprs)}", parameters={"t": t, "m": m, "h": h, "n": n, "w": w}).result_rows[0]
    for mode, got in zip(("ordered", "unordered", "sequential"), row, strict=True):
        assert [list(p) for p in got] == reference(t, m, h, n, w, mode), mode
    # without a hold-constant key (ordered/unordered skip the layout by key): every event has one key
    free = [funnel_paths_expr(mode, "{t:Array(Int64)}", "{m:Array(UInt64)}", "{n:UInt8}", "{w:Int64}")
            for mode in ("ordered", "unordered", "sequential")]
    row = reader.query(f"SELECT {', '.join(free)}", parameters={"t": t, "m": m, "n": n, "w": w}).result_rows[0]
    for mode, got in zip(("ordered", "unordered", "sequential"), row, strict=True):
        assert [list(p) for p in got] == reference(t, m, [0] * len(t), n, w, mode), f"{mode} without a hold"


def test_marts_names_and_bad_mode() -> None:
    assert funnel_paths_expr("this", "t", "m", 3, 10) == funnel_paths_expr("ordered", "t", "m", 3, 10)
    assert "eventpipe_funnel_sequential(" in funnel_paths_expr("exact", "t", "m", 2, 5, "h")
    assert "eventpipe_funnel_ordered_rows(" in funnel_paths_expr("this", "t", "m", 2, 5)  # no hold: no layout
    assert "eventpipe_funnel_ordered(" in funnel_paths_expr("this", "t", "m", 2, 5, "h")
    with pytest.raises(ValueError, match="funnel mode"):
        funnel_paths_expr("sideways", "t", "m", 2, 5)


def test_level_aggregate_for_sql_funnel(reader: Any) -> None:
    """funnel_level_expr (FUNNEL() in /api/sql): per actor the level of its best path, 0 when it never enters."""
    from eventpipe_core.funnel_sql import funnel_level_expr

    rows = [("a", 1, "1", "view"), ("a", 5, "2", "cart"), ("a", 9, "3", "buy"),  # full path
            ("b", 1, "1", "cart"), ("b", 2, "2", "view"), ("b", 30, "3", "buy"),  # no cart after the entry
            ("c", 3, "1", "buy"),                                                # never enters
            ("d", 4, "b", "view"), ("d", 4, "a", "cart")]                       # tie: cart sorts first by insert_id
    values = ", ".join(f"('{a}', {t}, '{i}', '{e}')" for a, t, i, e in rows)
    level = funnel_level_expr("ordered", "t", "i", ["e = 'view'", "e = 'cart'", "e = 'buy'"], 10)
    got = reader.query(f"SELECT a, {level} FROM (SELECT * FROM values('a String, t Int64, i String, e String', {values}))"
                       " GROUP BY a ORDER BY a").result_rows
    assert got == [("a", 3), ("b", 1), ("c", 0), ("d", 1)]
    seq = funnel_level_expr("sequential", "t", "i", ["e = 'view'", "e = 'buy'"], 100, entry="t > 2")
    got = reader.query(f"SELECT a, {seq} FROM (SELECT * FROM values('a String, t Int64, i String, e String', {values}))"
                       " GROUP BY a ORDER BY a").result_rows
    assert got == [("a", 0), ("b", 0), ("c", 0), ("d", 1)]  # a's and b's views fail the entry condition
