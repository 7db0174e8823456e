"""``POST /api/sql``: the caller's read-only SQL over its own project (checks and rewriting in
:mod:`query_service.sql_rewrite`).

Body ``{"query": "…", "params": {"name": value, …}}``; ``{name:Type}`` placeholders in the query bind ``params``
server-side (values never enter SQL text). The answer is ClickHouse's ``JSON`` output format — ``meta``
(``[{name, type}]``), ``data`` (one object per row; 64-bit integers as strings, as ClickHouse writes them),
``rows``, ``statistics`` — plus ``is_cached`` (false), ``computed_at`` (UTC, ISO 8601) and ``data_version``
(null). Errors: 400 ``{"code", "error", "parameter": "query"|"params.NAME"|"body"}`` for a refused or failing
query (also one over a limit: ``SQL_MAX_EXECUTION_TIME``, ``SQL_MAX_MEMORY_USAGE``, ``SQL_MAX_RESULT_ROWS``),
403 for a table or function the caller may not read, 503 when ClickHouse cannot answer now.

It runs as the read-only ClickHouse user (``CLICKHOUSE_READONLY_USER``, the Engine's hot-data client): the
server's own read-only rules apply on top of the rewrite, and days past ``CLICKHOUSE_TTL_DAYS`` (in the lake
only) are not visible to SQL.

Seams for a result cache (``q-cache``): :func:`prepare` → ``Rewritten.normalized`` (a canonical text, the cache
key's query part), :func:`reads` / :func:`read_partitions` → what the query reads, :func:`execute_sql` (or
:func:`sql_executor`, bound to the engine and limits) → the response dict; ``sql_route(…, wrap=)`` decorates it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, Literal

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe_core.settings import Settings
from query_service.engine import QueryFailed
from query_service.params import ParamError
from query_service.sql_rewrite import PROJECT_PARAM, TZ_PARAM, Rewritten, SqlRefused, rewrite

log = logging.getLogger(__name__)

Guard = Callable[[Callable[[Request, Any], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]
# ClickHouse error codes meaning "not allowed" (ACCESS_DENIED, READONLY, DATABASE_ACCESS_DENIED, UNKNOWN_DATABASE
# of a refused one) and "busy now" (TOO_MANY_SIMULTANEOUS_QUERIES); every other server error is the query's.
_FORBIDDEN_CODES = frozenset({497, 164, 291})
_BUSY_CODES = frozenset({202})
_LIMIT_CODES = {159: "SQL_MAX_EXECUTION_TIME", 241: "SQL_MAX_MEMORY_USAGE", 158: "SQL_MAX_RESULT_ROWS",
                396: "SQL_MAX_RESULT_ROWS"}
ParamValue = str | int | float | bool | None | list[Any]


class SqlFailed(Exception):
    """ClickHouse refused the caller's query for a reason of the query's own (status 400 or 403)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class SqlLimits:
    max_execution_time: int
    max_memory_usage: int
    max_result_rows: int

    @classmethod
    def from_settings(cls, s: Settings) -> SqlLimits:
        """Ours, never above chserver's profile for the read-only user (it would refuse a higher value)."""

        def cap(ours: int, server: int) -> int:
            return min(ours, server) if ours and server else (ours or server)

        return cls(cap(s.sql_max_execution_time, s.chserver_reader_max_execution_time),
                   cap(s.sql_max_memory_usage, s.chserver_reader_max_memory_usage),
                   cap(s.sql_max_result_rows, s.chserver_reader_max_result_rows))

    def clickhouse_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result_overflow_mode": "throw"}
        for name in ("max_execution_time", "max_memory_usage", "max_result_rows"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


def parse_body(raw: bytes) -> tuple[str, dict[str, ParamValue]]:
    """``{"query": str, "params": {name: JSON scalar or array}}`` → (query, params); ParamError (400) else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ParamError("body", 'must be JSON {"query": "…", "params": {…}}') from None
    if not isinstance(body, dict):
        raise ParamError("body", 'must be a JSON object {"query": "…", "params": {…}}')
    unknown = set(body) - {"query", "params"}
    if unknown:
        raise ParamError(sorted(unknown)[0], "unknown field (the body has query and params)")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ParamError("query", "must be a non-empty SQL string")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise ParamError("params", "must be an object of name -> value")
    for name, value in params.items():
        if not isinstance(value, str | int | float | bool | list) and value is not None:
            raise ParamError(f"params.{name}", "must be a string, number, boolean, null or array")
    return query, params


def prepare(query: str, database: str) -> Rewritten:
    """Check and rewrite (raises :class:`~query_service.sql_rewrite.SqlRefused`); ``.normalized`` is canonical."""
    return rewrite(query, database)


def reads(prepared: Rewritten, project: str) -> dict[str, Literal["all"]]:
    """What the query reads, for cache invalidation: table → its partitions of ``project``. The days are not
    derived from the query (any expression may bound ``event_time``), so each table read is ``"all"`` of it."""
    return {table: "all" for table in sorted(prepared.tables)}


def read_partitions(prepared: Rewritten, project: str) -> tuple[tuple[str, date], ...] | Literal["all"]:
    """The (project, UTC day) partitions of ``analytics.events`` and the marts the query reads: none for a query
    reading no table, else ``"all"`` (not derived from the SQL, see :func:`reads`)."""
    return () if not prepared.tables else "all"


def _bind(prepared: Rewritten, project: str, tz: str, params: dict[str, ParamValue]) -> dict[str, Any] | None:
    missing = sorted(prepared.params - set(params))
    if missing:
        raise ParamError(f"params.{missing[0]}", "the query uses this parameter but params does not give it")
    if not prepared.placeholders:
        return None  # no binding at all: the driver must not %-format the text
    return {**{k: params[k] for k in prepared.params}, PROJECT_PARAM: project, TZ_PARAM: tz}


def _clickhouse_message(exc: Exception) -> str:
    text = str(exc)
    i = text.find("DB::Exception:")
    text = text[i + len("DB::Exception:"):] if i >= 0 else text
    return " ".join(text.split())[:600].strip()


def execute_sql(engine: Any, limits: SqlLimits, project: str, tz: str, normalized_sql: str,
                params: dict[str, ParamValue]) -> dict[str, Any]:
    """Run one caller's query (the cache's seam): → the response dict. Raises SqlRefused / SqlFailed (400/403),
    ParamError (a missing parameter), QueryFailed (ClickHouse cannot answer now: 503)."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    prepared = prepare(normalized_sql, engine.database)
    bind = _bind(prepared, project, tz, params)
    computed_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        raw = engine.client(False).raw_query(prepared.sql, parameters=bind, settings=limits.clickhouse_settings(),
                                             fmt="JSON")
    except DatabaseError as exc:
        code = getattr(exc, "code", None)
        message = _clickhouse_message(exc)
        if isinstance(exc, OperationalError) or code is None or code in _BUSY_CODES:
            log.warning("sql query of %s failed: %s", project, message)
            raise QueryFailed(message) from None
        if code in _FORBIDDEN_CODES:
            raise SqlFailed(403, f"not allowed: {message}") from None
        if code in _LIMIT_CODES:
            raise SqlFailed(400, f"the query exceeds {_LIMIT_CODES[code]}: {message}") from None
        raise SqlFailed(400, message) from None
    out = orjson.loads(raw) if raw.strip() else {"meta": [], "data": [], "rows": 0, "statistics": {}}
    out.update(is_cached=False, computed_at=computed_at, data_version=None)
    return out


Executor = Callable[[str, str, str, dict[str, ParamValue]], dict[str, Any]]  # (project, tz, normalized, params)


def sql_executor(settings: Settings, engine: Any) -> Executor:
    """:func:`execute_sql` bound to the engine and the SQL limits: what a cache wraps."""
    return partial(execute_sql, engine, SqlLimits.from_settings(settings))


def sql_route(settings: Settings, engine: Any, guarded: Guard, wrap: Callable[[Executor], Executor] | None = None) -> Route:
    """``POST /api/sql`` behind the app's auth (``guarded`` turns ParamError into 400, QueryFailed into 503);
    ``wrap`` decorates the executor (a result cache keyed on project, tz, normalized SQL, params and
    :func:`reads`)."""
    run = sql_executor(settings, engine)
    run = wrap(run) if wrap is not None else run

    async def handler(request: Request, scope: Any) -> Response:
        query, params = parse_body(await request.body())
        try:
            normalized = prepare(query, engine.database).normalized
            result = await run_in_threadpool(run, scope.project, scope.timezone, normalized, params)
        except (SqlRefused, SqlFailed) as exc:
            body = {"code": exc.status, "error": exc.message, "parameter": "query"}
            return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json")
        return Response(orjson.dumps(result), media_type="application/json")

    return Route("/api/sql", guarded(handler), methods=["POST"])
