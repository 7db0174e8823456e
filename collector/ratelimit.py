"""Token buckets for the per-device / per-user event rate and the per-API-key request rate.

A bucket holds ``rate × window_s`` tokens and refills at ``rate`` per second, so a key may send
``rate`` events per second averaged over the window (Amplitude: "measured as an average over a
recent time window"), with bursts up to one window's worth. A request is admitted only if every
key it touches has enough tokens for its events; otherwise nothing is charged and the caller
answers 429 naming the keys that are over — so a retried request is not counted twice.

State lives in this process (one collector worker); it is bounded by dropping idle (full)
buckets once there are more than ``max_keys``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping


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
