"""Query cost and per-project limits, shared by every worker through Redis (Amplitude-like).

Cost of a query (known before it runs, from its parsed form): ``days × conditions × weight`` where ``days`` is
the range's length, ``conditions`` the number of filters (segments + every event's filters; at least 1), and
the weight by type:

* segmentation / users: one per event (``e``, ``e2``), +4 per group-by; lifecycle, stickiness: one (their event);
* funnels: 2 per step, +4 per group-by;
* retention: 8; sessions (length, per user): 4; realtime: 2 in all; a user look-up: 1 in all;
* SQL (``/api/sql``): ``ceil(rows to read / QUERY_COST_SQL_ROWS_PER_UNIT)`` from the query's EXPLAIN estimate
  (:func:`sql_cost`; the caller supplies the estimate).

Per project, at once: at most ``QUERY_LIMIT_CONCURRENT`` (5) queries running and ``QUERY_LIMIT_RUNNING_COST``
(1000) cost running; over the last hour at most ``QUERY_LIMIT_HOURLY_COST`` (36000) cost started (minute buckets,
so the hour slides by minutes). A query costing more than a cap alone is charged the cap (it then runs only when
nothing else of the project does, instead of never). Cache hits cost nothing (the cache asks only on a miss).
A refused query gets 429 naming the limit, with ``Retry-After`` (1 s for the at-once limits; for the hourly one,
until enough of the hour's cost has aged out).

All checks and the charge are one Lua script (atomic across workers; time is Redis' clock). A running query is a
lease (``QUERY_MAX_EXECUTION_S`` + 30 s): a worker that dies mid-query frees its share when the lease ends. If
Redis fails, queries are admitted (logged): limits protect ClickHouse, they must not take the API down.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from query_service import params as P

log = logging.getLogger(__name__)

GROUP_BY_WEIGHT = 4
FUNNEL_STEP_WEIGHT = 2
RETENTION_WEIGHT = 8
SESSIONS_WEIGHT = 4


def _conditions(segments: tuple[P.PropFilter, ...], events: tuple[P.EventSpec, ...]) -> int:
    return max(1, len(segments) + sum(len(e.filters) for e in events))


def query_cost(q: Any) -> int:
    """The cost of a parsed typed query (rules in the module docstring)."""
    if isinstance(q, P.SegmentationQuery):
        return q.range.days * _conditions(q.segments, q.events) * (len(q.events) + GROUP_BY_WEIGHT * len(q.group_by))
    if isinstance(q, P.FunnelQuery):
        return q.range.days * _conditions(q.segments, q.steps) * (FUNNEL_STEP_WEIGHT * len(q.steps)
                                                                  + GROUP_BY_WEIGHT * len(q.group_by))
    if isinstance(q, P.RetentionQuery):
        return q.range.days * _conditions(q.segments, (q.start_event, q.return_event)) * RETENTION_WEIGHT
    if isinstance(q, P.UsersQuery):
        return q.range.days * _conditions(q.segments, ()) * (1 + GROUP_BY_WEIGHT * len(q.group_by))
    from query_service import params_insights as PI

    if isinstance(q, PI.SessionsQuery):
        return sessions_cost(q.range.days, _conditions(q.segments, ()))
    if isinstance(q, PI.LifecycleQuery | PI.StickinessQuery):
        return q.range.days * _conditions(q.segments, (q.event,))
    if isinstance(q, PI.RealtimeQuery):
        return 2  # today and yesterday, no condition
    if isinstance(q, PI.UserLookup):
        return 1  # one user's rows (point look-ups by id)
    raise TypeError(f"no cost rule for {type(q).__name__}")


def sessions_cost(days: int, conditions: int) -> int:
    return days * max(1, conditions) * SESSIONS_WEIGHT


def sql_cost(rows_to_read: int, rows_per_unit: int) -> int:
    """``/api/sql``: cost from the EXPLAIN estimate of rows to read (at least 1)."""
    return max(1, math.ceil(rows_to_read / rows_per_unit))


@dataclass(frozen=True)
class Refused:
    limit: str  # concurrent | running_cost | hourly_cost
    retry_after: int  # seconds
    message: str


# KEYS: running hash (query id -> "cost:lease deadline ms"), hourly hash (minute -> cost started)
# ARGV: id, cost, max running cost, max hourly cost, max concurrent, lease ms
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, cost = ARGV[1], tonumber(ARGV[2])
local max_cost, max_hour, max_n, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local running = redis.call('HGETALL', KEYS[1])
local n, sum = 0, 0
for i = 1, #running, 2 do
  local v = running[i + 1]
  local sep = string.find(v, ':', 1, true)
  local c, dl = tonumber(string.sub(v, 1, sep - 1)), tonumber(string.sub(v, sep + 1))
  if dl < now then redis.call('HDEL', KEYS[1], running[i]) else n = n + 1; sum = sum + c end
end
if n + 1 > max_n then return {0, 'concurrent', n, 1} end
if sum + cost > max_cost then return {0, 'running_cost', sum, 1} end
local minute = math.floor(now / 60000)
local hour = redis.call('HGETALL', KEYS[2])
local used, buckets = 0, {}
for i = 1, #hour, 2 do
  local m, c = tonumber(hour[i]), tonumber(hour[i + 1])
  if m <= minute - 60 then redis.call('HDEL', KEYS[2], hour[i]) else used = used + c; table.insert(buckets, {m, c}) end
end
if used + cost > max_hour then
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  local freed, retry = 0, 3600
  for _, b in ipairs(buckets) do
    freed = freed + b[2]
    if used - freed + cost <= max_hour then retry = math.ceil(((b[1] + 61) * 60000 - now) / 1000); break end
  end
  return {0, 'hourly_cost', used, retry}
end
redis.call('HINCRBY', KEYS[2], tostring(minute), cost)
redis.call('PEXPIRE', KEYS[2], 3720000)
redis.call('HSET', KEYS[1], id, cost .. ':' .. (now + lease))
redis.call('PEXPIRE', KEYS[1], lease)
return {1, 'ok', sum + cost, 0}
"""


class QueryLimiter:
    """``acquire`` before running a query (a lease id, or :class:`Refused`), ``release`` after."""

    def __init__(self, client_for: Any, prefix: str, running_cost: int, hourly_cost: int, concurrent: int,
                 lease_s: float):
        self._client_for = client_for  # () -> redis.asyncio client of the running loop
        self.prefix = prefix
        self.running_cost, self.hourly_cost, self.concurrent = running_cost, hourly_cost, concurrent
        self.lease_ms = int(lease_s * 1000)

    def _keys(self, project: str) -> list[str]:
        return [f"{self.prefix}run:{project}", f"{self.prefix}hour:{project}"]

    async def acquire(self, project: str, cost: int) -> str | Refused | None:
        """A lease id when admitted, :class:`Refused` when a limit is reached, None when Redis failed (admitted)."""
        charged = max(1, min(cost, self.running_cost, self.hourly_cost))
        lease = uuid.uuid4().hex
        try:
            ok, limit, used, retry = await self._client_for().eval(
                _ACQUIRE, 2, *self._keys(project), lease, charged, self.running_cost, self.hourly_cost,
                self.concurrent, self.lease_ms)
        except Exception as exc:  # noqa: BLE001 - Redis away: admit (logged), never fail the API on it
            log.warning("query limits unavailable (admitting): %s", exc)
            return None
        if ok:
            return lease
        limit = limit.decode() if isinstance(limit, bytes) else str(limit)
        caps = {"concurrent": f"at most {self.concurrent} queries of a project at once ({used} running)",
                "running_cost": f"at most {self.running_cost} query cost of a project running at once ({used} running,"
                                f" this query costs {charged})",
                "hourly_cost": f"at most {self.hourly_cost} query cost of a project per hour ({used} used,"
                               f" this query costs {charged})"}
        return Refused(limit, max(1, int(retry)), f"query limit {limit} reached: {caps[limit]}")

    async def release(self, project: str, lease: str | None) -> None:
        if lease is None:
            return
        try:
            await self._client_for().hdel(self._keys(project)[0], lease)
        except Exception as exc:  # noqa: BLE001 - the lease expires on its own
            log.warning("query limits: could not release %s: %s", lease, exc)
