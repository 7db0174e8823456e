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


def test_marts_names_and_bad_mode() -> None:
    assert funnel_paths_expr("this", "t", "m", 3, 10) == funnel_paths_expr("ordered", "t", "m", 3, 10)
    assert "eventpipe_funnel_sequential(" in funnel_paths_expr("exact", "t", "m", 2, 5, "h")
    with pytest.raises(ValueError, match="funnel mode"):
        funnel_paths_expr("sideways", "t", "m", 2, 5)
