"""Token buckets for the per-device / per-user event rate and the per-API-key request rate.

A bucket holds ``rate × window_s`` tokens and refills at ``rate`` per second, so a key may send
``rate`` events per second averaged over the window (Amplitude: "measured as an average over a
recent time window"), with bursts up to one window's worth. A request is admitted only if every
key it touches has enough tokens for its events; otherwise nothing is charged and the caller
answers 429 naming the keys that are over — so a retried request is not counted twice.

:class:`TokenBuckets` keeps the state in this process (one collector worker), bounded by dropping
idle (full) buckets once there are more than ``max_keys``; :class:`RedisTokenBuckets` keeps the
same buckets in Redis (``REDIS_URL``), shared by every worker and host.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

log = logging.getLogger(__name__)


class TokenBuckets:
    """Many independent token buckets sharing one rate and window."""

    def __init__(
        self, rate: float, window_s: float, *, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = float(rate)
        self.window_s = float(window_s)
        self.capacity = self.rate * self.window_s
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def _tokens(self, key: Hashable, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return self.capacity
        tokens, last = state
        return min(self.capacity, tokens + (now - last) * self.rate)

    def current_rate(self, key: Hashable, extra: int = 0) -> int:
        """Events per second of ``key`` over the window, counting ``extra`` more events."""
        used = self.capacity - self._tokens(key, self.clock()) + extra
        return max(0, math.ceil(used / self.window_s))

    def acquire(self, demands: Mapping[Hashable, int]) -> dict[Hashable, int]:
        """Charge every key its demand if all fit; else charge nothing and return the keys over
        the limit with their rate (events/s over the window, this request included)."""
        now = self.clock()
        over: dict[Hashable, int] = {}
        levels: dict[Hashable, float] = {}
        for key, n in demands.items():
            tokens = self._tokens(key, now)
            levels[key] = tokens
            if tokens + 1e-9 < n:
                over[key] = max(math.ceil((self.capacity - tokens + n) / self.window_s), 0)
        if over:
            return over
        for key, n in demands.items():
            self._buckets[key] = (levels[key] - n, now)
        if len(self._buckets) > self.max_keys:
            self._prune(now)
        return {}

    def refund(self, demands: Mapping[Hashable, int]) -> None:
        """Give back what :meth:`acquire` charged for a request that was then not accepted (503)."""
        now = self.clock()
        for key, n in demands.items():
            if key in self._buckets:
                self._buckets[key] = (min(self.capacity, self._tokens(key, now) + n), now)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely (identical to a new bucket)."""
        full = [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) > self.max_keys:  # still too many active keys: drop the oldest half
            oldest = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: len(self._buckets) // 2]
            for k, _ in oldest:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


# --- shared across workers: Redis -------------------------------------------------------------
# All-or-nothing charge of several buckets, atomically (one script). Time is Redis' own clock, so
# every worker and host sees the same refill. Returns {} or the flat list [index, tokens, …] of the
# buckets over their limit (1-based KEYS indexes) with their levels before this request.
_ACQUIRE = """
local rate, cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local levels, over = {}, {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then tokens, ts = cap, now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  levels[i] = tokens
  if tokens + 1e-9 < tonumber(ARGV[3 + i]) then
    table.insert(over, i)
    table.insert(over, tostring(tokens))
  end
end
if #over > 0 then return over end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 't', tostring(levels[i] - tonumber(ARGV[3 + i])), 'ts', tostring(now))
  redis.call('PEXPIRE', key, ttl)
end
return {}
"""

_REFUND = """
local rate, cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens ~= nil then
    tokens = math.min(cap, tokens + math.max(0, now - ts) * rate + tonumber(ARGV[3 + i]))
    redis.call('HSET', key, 't', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
"""


class RedisTokenBuckets:
    """The same buckets as :class:`TokenBuckets`, kept in Redis so every collector worker (and host)
    shares them. Keys ``<prefix>{rl}:<name>:<kind>:<value>`` (one hash slot: the script touches
    several at once), expiring once a bucket would be full again. If Redis fails, the request is
    checked against this worker's local buckets instead (logged): limits degrade to per worker, the
    ingestion does not stop."""

    def __init__(self, client: Any, name: str, rate: float, window_s: float, *, prefix: str,
                 fallback: TokenBuckets | None = None) -> None:
        self.client, self.name, self.prefix = client, name, prefix
        self.rate, self.window_s = float(rate), float(window_s)
        self.capacity = self.rate * self.window_s
        self.ttl_ms = int(self.window_s * 1000) + 1000
        self.fallback = fallback or TokenBuckets(rate, window_s)
        self._acquire = client.register_script(_ACQUIRE)
        self._refund = client.register_script(_REFUND)

    def _key(self, key: Hashable) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return f"{self.prefix}{{rl}}:{self.name}:" + ":".join(str(p) for p in parts)

    async def acquire(self, demands: Mapping[Hashable, int]) -> dict[Hashable, int]:
        items = list(demands.items())
        if not items:
            return {}
        try:
            over = await self._acquire(keys=[self._key(k) for k, _ in items],
                                       args=[self.rate, self.capacity, self.ttl_ms, *(n for _, n in items)])
        except Exception as exc:  # noqa: BLE001 - Redis away: per-worker limits meanwhile
            log.warning("shared rate limits unavailable (%s): using this worker's", exc)
            return self.fallback.acquire(demands)
        result: dict[Hashable, int] = {}
        for j in range(0, len(over), 2):
            key, n = items[int(over[j]) - 1]
            tokens = float(over[j + 1])
            result[key] = max(math.ceil((self.capacity - tokens + n) / self.window_s), 0)
        return result

    async def refund(self, demands: Mapping[Hashable, int]) -> None:
        items = list(demands.items())
        if not items:
            return
        try:
            await self._refund(keys=[self._key(k) for k, _ in items],
                               args=[self.rate, self.capacity, self.ttl_ms, *(n for _, n in items)])
        except Exception as exc:  # noqa: BLE001 - a lost refund only makes the limit stricter for a while
            log.warning("shared rate limits: refund failed (%s)", exc)
            self.fallback.refund(demands)


class LocalLimits:
    """:class:`TokenBuckets` behind the async interface of :class:`RedisTokenBuckets`."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    async def acquire(self, demands: Mapping[Hashable, int]) -> dict[Hashable, int]:
        return self.buckets.acquire(demands)

    async def refund(self, demands: Mapping[Hashable, int]) -> None:
        self.buckets.refund(demands)


def make_limits(settings: Any) -> tuple[Any, Any, Any, Any]:
    """(v2, batch, key) limiters and the Redis client (None without ``REDIS_URL``): shared through
    Redis when ``REDIS_URL`` is set, per worker process otherwise."""
    window = settings.collector_eps_window_s
    specs = (("v2", settings.collector_v2_eps), ("batch", settings.collector_batch_eps), ("key", settings.collector_key_rps))
    if not settings.redis_url:
        return (*(LocalLimits(TokenBuckets(rate, window)) for _, rate in specs), None)
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    prefix = settings.collector_redis_prefix
    return (*(RedisTokenBuckets(client, name, rate, window, prefix=prefix) for name, rate in specs), client)
