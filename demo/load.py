"""`eventpipe generate`: a steady stream of synthetic product events at "now", against any collector.

Events are sent in small batches on a fixed schedule (``rate`` events/s, a batch every
``tick_s``) through :class:`demo.sender.Sender` (Batch API, SDK-style retries). Users and devices
are drawn from a pool, so the per-device rate limit is never the bottleneck.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from demo.generator import ANDROID_UA, IOS_UA, LIBRARY, PATHS, QUERIES, WEB_UAS
from demo.sender import Sender

EVENT_MIX = (("page_view", 5), ("search", 2), ("view_item", 4), ("add_to_cart", 1), ("purchase", 0.3))


@dataclass
class LoadResult:
    sent: int = 0
    accepted: int = 0
    elapsed_s: float = 0.0
    request_latencies_s: list[float] = field(default_factory=list)
    accepted_at: dict[str, float] = field(default_factory=dict)  # insert_id -> wall-clock time its batch was accepted

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s else 0.0


class LoadGenerator:
    """Random but seeded events of ``users`` users (one or two devices each) at the current time."""

    def __init__(self, users: int = 5000, seed: int = 1, project_tag: str = "load") -> None:
        self.rng = random.Random(seed)
        self.tag = project_tag
        self.users = [(f"{project_tag}-user-{i:06d}", str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
                      for i in range(users)]
        self.kinds, self.weights = zip(*EVENT_MIX, strict=True)

    def event(self, now_ms: int) -> dict[str, Any]:
        user_id, device_id = self.rng.choice(self.users)
        etype = self.rng.choices(self.kinds, weights=self.weights)[0]
        ua = self.rng.choice((*WEB_UAS, IOS_UA, ANDROID_UA))
        props: dict[str, Any] = {"path": self.rng.choice(PATHS)} if etype == "page_view" else {}
        if etype == "search":
            props = {"query": self.rng.choice(QUERIES)}
        elif etype in ("view_item", "add_to_cart", "purchase"):
            props = {"product": f"sku-{self.rng.randrange(1, 401):04d}"}
        return {"event_type": etype, "time": now_ms, "user_id": user_id, "device_id": device_id,
                "insert_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), "event_properties": props,
                "user_agent": ua, "library": LIBRARY, "platform": "Web"}


def run_load(sender: Sender, rate: float, duration_s: float, *, tick_s: float = 0.5, users: int = 5000, seed: int = 1,
             on_tick: Callable[[LoadResult], None] | None = None) -> LoadResult:
    """Send ``rate`` events/s for ``duration_s`` seconds; a slow collector makes batches grow, not the schedule slip."""
    gen = LoadGenerator(users=users, seed=seed)
    result = LoadResult()
    start = time.monotonic()
    owed = 0.0
    for tick in range(max(1, round(duration_s / tick_s))):
        delay = start + tick * tick_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        owed += rate * tick_s
        n = int(owed)
        owed -= n
        if n == 0:
            continue
        now_ms = int(time.time() * 1000)
        batch = [gen.event(now_ms) for _ in range(n)]
        t = time.monotonic()
        before = sender.stats.accepted
        sender.send(batch, batch_size=2000)
        result.request_latencies_s.append(time.monotonic() - t)
        result.sent += n
        accepted_wall = time.time()
        if sender.stats.accepted - before == n:
            for e in batch:
                result.accepted_at[e["insert_id"]] = accepted_wall
        result.accepted = sender.stats.accepted
        if on_tick is not None:
            on_tick(result)
    result.elapsed_s = time.monotonic() - start
    return result


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
