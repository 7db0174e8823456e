"""The result cache (Redis) and the query limits around every query endpoint: :meth:`QueryCache.wrap`.

An endpoint plugs in with a *planner* ``(query params, scope) -> Plan``: the parsed and compiled form of the
request, pure and cheap (no I/O), known before anything runs. From it:

* **key** = endpoint + project + time zone + bots flag + the parsed request (the normalized request: JSON spelling
  and parameter order do not matter) + the compiled SQL and bound parameters of every query the answer runs (so
  e.g. a cohort's definition is in it) + the **data versions** of exactly the
  partitions they read — per (project, UTC day) of ``analytics.events`` (``Compiled.utc_days``; every day when
  ``all_history``) and per table for marts (``Plan.tables``), bumped by every load
  (:mod:`eventpipe_core.data_versions`). An answer is served until a load rewrites a day it covers, and exactly
  then recomputed; answers over other days stay cached. The TTL (``QUERY_CACHE_TTL_S``) only bounds memory.
  Routing (hot ClickHouse vs. lake days) is not part of the key: it does not change the answer.
* **cost** for the limits (:mod:`query_service.limits`), charged only when the answer is computed.

Refresh modes (``refresh=``, PostHog's):

* ``blocking`` (default): the cached answer, else compute it now;
* ``force``: compute now (and cache);
* ``cache_only``: never compute; 404 ``{"code", "error", "parameter": "refresh"}`` when absent;
* ``async``: the cached answer at once when there is one for the current data versions; else the latest answer of
  the same request over older versions (``is_stale: true``) or, with none, 202 ``{"data": null, "computing": true}``
  — and the answer is computed in the background (once across workers: a Redis lock; poll with ``cache_only``).

Concurrent identical requests in one worker share one computation (single-flight), whatever the mode.

Every answer carries ``is_cached``, ``computed_at`` (UTC ISO), ``data_version`` (a digest of the versions read),
and the range's intervals (labels as in ``xValues``) that may still change: ``incomplete`` — buckets that contain
the project's today or later (data is still arriving); ``provisional`` — other buckets ending within
``LATE_DATA_LOOKBACK_DAYS`` of today (late events may still re-load their hours; the cache recomputes them when
they do). Older buckets are final.

Without ``REDIS_URL`` answers are computed every time (``is_cached: false``) and no limits apply.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from starlette.requests import Request
from starlette.responses import Response

from eventpipe_core import data_versions as dv
from eventpipe_core.settings import Settings
from query_service import params as P
from query_service.compile.common import Compiled, bucket_labels
from query_service.limits import QueryLimiter, Refused

log = logging.getLogger(__name__)

REFRESH_MODES = ("blocking", "force", "cache_only", "async")
COHORT_MEMBERS = "cohort_members"


@dataclass(frozen=True)
class Plan:
    """What an answer runs and reads, before it runs."""

    compiled: tuple[Compiled, ...]  # every query of the answer (key: SQL + params; reads: their partitions)
    cost: int
    range: P.DateRange | None = None  # for the incomplete / provisional flags
    interval: str = "day"
    tables: tuple[tuple[str, tuple[date, ...], bool], ...] = ()  # other tables read: (name, UTC days, all history)
    extra: tuple[str, ...] = ()  # request options outside the SQL that change the answer (e.g. a model name)
    query: Any = None  # the parsed request (a frozen dataclass; its repr is part of the key: limit, shaping options)
    cost_fn: Callable[[], Awaitable[int]] | None = None  # a cost that needs I/O (SQL's EXPLAIN), asked only on a miss

    def reads(self) -> list[tuple[str, tuple[date, ...], bool]]:
        days = sorted({d for c in self.compiled for d in c.utc_days})
        out = [(dv.EVENTS, tuple(days), any(c.all_history for c in self.compiled)), *self.tables]
        if any(COHORT_MEMBERS in c.sql for c in self.compiled):
            out.append((COHORT_MEMBERS, (), True))
        return out


Planner = Callable[[Mapping[str, Any], P.Scope], Plan]
# For endpoints with a body (``/api/sql``): (request, scope) -> Plan, or None = not cacheable (invalid: the handler
# answers it as it would uncached).
RequestPlanner = Callable[[Request, P.Scope], Awaitable["Plan | None"]]
Handler = Callable[[Request, P.Scope], Awaitable[Response]]


class _JSON(Response):
    media_type = "application/json"


def _error(status: int, message: str, parameter: str | None = None, headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": status, "error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return _JSON(orjson.dumps(body), status_code=status, headers=headers)


def interval_flags(rng: P.DateRange, interval: str, tz: str, lookback_days: int, today: date | None = None
                   ) -> tuple[list[str], list[str]]:
    """(incomplete, provisional) bucket labels of ``rng`` (rules in the module docstring)."""
    today = today or datetime.now(ZoneInfo(tz)).date()
    settled = today - timedelta(days=lookback_days)
    incomplete, provisional = [], []
    if rng.end < settled:
        return incomplete, provisional
    for label in bucket_labels(rng.start, rng.end, interval, tz):
        first = date.fromisoformat(label[:10])
        if interval == "week":
            last = first + timedelta(days=6)
        elif interval == "month":
            last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        else:
            last = first
        if last >= today:
            incomplete.append(label)
        elif last >= settled:
            provisional.append(label)
    return incomplete, provisional


class QueryCache:
    """Cache + limits of the query endpoints of one app (one per worker)."""

    def __init__(self, settings: Settings, redis_url: str | None = None):
        self.settings = settings
        self.url = redis_url if redis_url is not None else settings.redis_url
        self.prefix = settings.query_redis_prefix
        self.dv_prefix = settings.data_versions_prefix
        self.ttl = settings.query_cache_ttl_s
        self._clients: dict[int, Any] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._background: set[asyncio.Task] = set()
        self.limiter = (QueryLimiter(self._client, self.prefix, settings.query_limit_running_cost,
                                     settings.query_limit_hourly_cost, settings.query_limit_concurrent,
                                     settings.query_max_execution_s + 30) if self.url else None)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def _client(self) -> Any:
        """One redis.asyncio client per event loop (a test client may run each request on its own loop)."""
        loop = asyncio.get_running_loop()
        c = self._clients.get(id(loop))
        if c is None:
            import redis.asyncio as aioredis

            if len(self._clients) > 8:
                self._clients.clear()
            c = aioredis.from_url(self.url, socket_timeout=5.0, socket_connect_timeout=2.0)
            self._clients[id(loop)] = c
        return c

    # --- keys ---------------------------------------------------------------------------------------------

    async def versions(self, plan: Plan, project: str) -> list[Any]:
        pipe = self._client().pipeline(transaction=False)
        names = []
        for table, days, all_history in plan.reads():
            for key, fields in dv.fields_for(self.dv_prefix, table, project, days, all_history):
                pipe.hmget(key, fields)
                names.append(key)
        values = await pipe.execute() if names else []
        return [[int(v) if v is not None else 0 for v in vs] for vs in values]

    @staticmethod
    def request_key(kind: str, plan: Plan, scope: P.Scope) -> str:
        doc = [kind, scope.project, scope.timezone, scope.include_bots, list(plan.extra), repr(plan.query),
               [[c.sql, sorted(c.params.items()), sorted(c.settings.items())] for c in plan.compiled]]
        return hashlib.sha256(orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)).hexdigest()

    # --- the wrapper --------------------------------------------------------------------------------------

    def wrap(self, kind: str, planner: Planner, handler: Handler) -> Handler:
        """``handler`` (returns a JSON object response) behind the cache and the limits; ``planner`` says what it
        runs. ParamError from the planner propagates (the app's guard answers 400)."""

        async def endpoint(request: Request, scope: P.Scope) -> Response:
            mode = P.parse_choice(request.query_params, "refresh", REFRESH_MODES, "blocking")
            plan_scope = P.Scope(scope.project, scope.timezone, scope.include_bots)  # routing is not part of the key
            plan = planner(request.query_params, plan_scope)
            return await self.answer(kind, plan, mode, request, scope, handler)

        return endpoint

    def wrap_request(self, kind: str, planner: RequestPlanner, handler: Handler) -> Handler:
        """As :meth:`wrap` for a planner that reads the request itself (a POST body); ``refresh`` is still a query
        parameter."""

        async def endpoint(request: Request, scope: P.Scope) -> Response:
            mode = P.parse_choice(request.query_params, "refresh", REFRESH_MODES, "blocking")
            plan = await planner(request, P.Scope(scope.project, scope.timezone, scope.include_bots))
            if plan is None:
                return await handler(request, scope)
            return await self.answer(kind, plan, mode, request, scope, handler)

        return endpoint

    async def answer(self, kind: str, plan: Plan, mode: str, request: Request, scope: P.Scope, handler: Handler
                     ) -> Response:
        flags = self._flags(plan, scope)
        if not self.enabled:
            status, body, computed_at = await self._run(plan, request, scope, handler)
            return self._respond(status, body, computed_at, False, "", flags)
        rkey = self.request_key(kind, plan, scope)
        try:
            versions = await self.versions(plan, scope.project)
        except Exception as exc:  # noqa: BLE001 - Redis away: answer uncached
            log.warning("query cache unavailable: %s", exc)
            status, body, computed_at = await self._run(plan, request, scope, handler, limit=False)
            return self._respond(status, body, computed_at, False, "", flags)
        version = hashlib.sha256(orjson.dumps(versions)).hexdigest()[:16]
        key = f"{self.prefix}r:{rkey}:{version}"
        if mode != "force":
            hit = await self._get(key)
            if hit is not None:
                return self._respond(200, hit[1], hit[0], True, version, flags)
        if mode == "cache_only":
            return _error(404, "no cached answer for this query and these data versions (refresh=cache_only never "
                               "computes; ask with refresh=blocking or async)", "refresh")
        if mode == "async":
            self._start_background(key, rkey, plan, request, scope, handler)
            stale = await self._get_latest(rkey)
            if stale is not None:
                return self._respond(200, stale[1], stale[0], True, "", flags, stale=True)
            return _JSON(orjson.dumps({"data": None, "is_cached": False, "computing": True, "data_version": version,
                                       "refresh": "async"}), status_code=202)
        status, body, computed_at = await self._shared(key, rkey, plan, request, scope, handler)
        if status == 429:
            return Response(body, status_code=429, media_type="application/json",
                            headers={"Retry-After": computed_at})
        return self._respond(status, body, computed_at, False, version, flags)

    # --- computing ----------------------------------------------------------------------------------------

    async def _run(self, plan: Plan, request: Request, scope: P.Scope, handler: Handler, limit: bool = True
                   ) -> tuple[int, bytes, str]:
        """(status, body, computed_at) — on refusal (429, body, Retry-After seconds)."""
        lease = None
        if limit and self.limiter is not None:
            cost = plan.cost if plan.cost_fn is None else await plan.cost_fn()
            got = await self.limiter.acquire(scope.project, cost)
            if isinstance(got, Refused):
                body = orjson.dumps({"code": 429, "error": got.message, "limit": got.limit, "cost": cost,
                                     "retry_after": got.retry_after})
                return 429, body, str(got.retry_after)
            lease = got
        try:
            computed_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            response = await handler(request, scope)
            return response.status_code, bytes(response.body), computed_at
        finally:
            if self.limiter is not None:
                await self.limiter.release(scope.project, lease)

    async def _shared(self, key: str, rkey: str, plan: Plan, request: Request, scope: P.Scope, handler: Handler
                      ) -> tuple[int, bytes, str]:
        """Single-flight: concurrent identical requests of this worker await one computation."""
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._run(plan, request, scope, handler)
            if result[0] == 200:
                await self._put(key, rkey, result[2], result[1])
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(key, None)

    def _start_background(self, key: str, rkey: str, plan: Plan, request: Request, scope: P.Scope,
                          handler: Handler) -> None:
        async def work() -> None:
            lock = f"{self.prefix}lock:{key}"
            try:
                if key in self._inflight or not await self._client().set(
                        lock, b"1", nx=True, px=int((self.settings.query_max_execution_s + 30) * 1000)):
                    return  # another request (here or in another worker) computes it
                try:
                    await self._shared(key, rkey, plan, request, scope, handler)
                finally:
                    await self._client().delete(lock)
            except Exception:  # noqa: BLE001 - a background computation has nobody to answer
                log.exception("background computation of %s failed", key)

        task = asyncio.get_running_loop().create_task(work())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- storage ------------------------------------------------------------------------------------------

    async def _get(self, key: str) -> tuple[str, bytes] | None:
        try:
            raw = await self._client().get(key)
        except Exception as exc:  # noqa: BLE001
            log.warning("query cache read failed: %s", exc)
            return None
        if raw is None:
            return None
        computed_at, _, body = raw.partition(b"\n")
        return computed_at.decode(), body

    async def _get_latest(self, rkey: str) -> tuple[str, bytes] | None:
        try:
            key = await self._client().get(f"{self.prefix}last:{rkey}")
        except Exception as exc:  # noqa: BLE001
            log.warning("query cache read failed: %s", exc)
            return None
        return await self._get(key.decode()) if key else None

    async def _put(self, key: str, rkey: str, computed_at: str, body: bytes) -> None:
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.set(key, computed_at.encode() + b"\n" + body, ex=self.ttl)
            pipe.set(f"{self.prefix}last:{rkey}", key.encode(), ex=self.ttl)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - an answer not cached is still an answer
            log.warning("query cache write failed: %s", exc)

    # --- responses ----------------------------------------------------------------------------------------

    def _flags(self, plan: Plan, scope: P.Scope) -> tuple[list[str], list[str]]:
        if plan.range is None:
            return [], []
        return interval_flags(plan.range, plan.interval, scope.timezone, self.settings.late_data_lookback_days)

    @staticmethod
    def _respond(status: int, body: bytes, computed_at: str, cached: bool, version: str,
                 flags: tuple[list[str], list[str]], stale: bool = False) -> Response:
        if status != 200 or not body.startswith(b"{"):
            return Response(body, status_code=status, media_type="application/json")
        meta: dict[str, Any] = {"is_cached": cached, "computed_at": computed_at, "data_version": version or None,
                                "incomplete": flags[0], "provisional": flags[1]}
        if stale:
            meta["is_stale"] = True
        if b'"is_cached"' in body:  # the handler wrote its own (uncached) fields (/api/sql): ours win
            return _JSON(orjson.dumps({**orjson.loads(body), **meta}))
        head = orjson.dumps(meta)
        rest = body[1:].lstrip()
        return _JSON(head[:-1] + (b"," + rest if rest != b"}" else b"}"))
