"""Alert evaluation and webhook delivery (pure core; used by the Dagster alerts_sensor, /api/alerts and `eventpipe alerts`).

Rules (the contract):

* A rule watches one series (interval start -> value) with a condition: ``above`` / ``below`` a threshold,
  ``change`` (relative change vs the previous interval, ``abs(v / prev - 1) > threshold``) or ``anomaly``
  (outside the :mod:`eventpipe_core.forecast` band). Only **complete** intervals are evaluated
  (``start + interval <= now``).
* :func:`evaluate` returns the breach per complete interval; :class:`AlertState` keeps the last evaluation and
  turns a new one into transitions: ``firing`` when the latest complete interval starts breaching,
  ``resolved`` when it stops, and ``revised`` when late data changed an earlier interval's value so that its
  breach flipped (the history records old and new values). When late data revises the latest interval itself
  so that it fires or resolves, that ``firing``/``resolved`` carries the revised-from ``old_value``.
  Re-evaluating unchanged data yields nothing, so a transition is delivered once. ``snoozed_until``
  suppresses deliveries (they are still recorded).
* Delivery: JSON POST with ``X-Eventpipe-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` and an
  ``X-Eventpipe-Event-Id`` (receivers dedupe on it); retried with exponential backoff on connection errors and
  5xx/429; a 4xx other than 429 is not retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from eventpipe_core.forecast import detect

CONDITIONS = ("above", "below", "change", "anomaly")


@dataclass(frozen=True)
class Rule:
    id: str
    condition: str
    threshold: float = 0.0
    interval: timedelta = timedelta(hours=1)
    webhook_url: str = ""
    secret: str = ""

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}")


def evaluate(rule: Rule, series: Sequence[tuple[datetime, float]], now: datetime) -> dict[datetime, tuple[float, bool]]:
    """interval start -> (value, breached) for every complete interval."""
    complete = [(t, v) for t, v in series if t + rule.interval <= now]
    out: dict[datetime, tuple[float, bool]] = {}
    if rule.condition == "anomaly":
        if not complete:
            return out
        granularity = "hour" if rule.interval <= timedelta(hours=1) else "day"
        eval_from = complete[-1][0] - rule.interval * 23  # the last 24 intervals get a band
        fc = detect(complete, eval_from, granularity=granularity, model="robust")
        return {p.time: (p.value or 0.0, p.anomaly) for p in fc.points}
    prev: float | None = None
    for t, v in complete:
        if rule.condition == "above":
            breach = v > rule.threshold
        elif rule.condition == "below":
            breach = v < rule.threshold
        else:
            breach = prev is not None and prev != 0 and abs(v / prev - 1) > rule.threshold
        out[t] = (v, breach)
        prev = v
    return out


@dataclass
class AlertState:
    status: str = "resolved"  # firing | resolved
    last: dict[datetime, tuple[float, bool]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    snoozed_until: datetime | None = None

    def update(self, rule: Rule, evaluation: dict[datetime, tuple[float, bool]], now: datetime) -> list[dict[str, Any]]:
        """New transitions (appended to ``history``), each with a stable ``id``."""
        events: list[dict[str, Any]] = []
        if not evaluation:
            return events
        latest = max(evaluation)
        for t, (v, breach) in sorted(evaluation.items()):
            old = self.last.get(t)
            # a revision is a changed value whose breach flipped (an anomaly band sliding over unchanged data is not)
            if t != latest and old is not None and old[0] != v and old[1] != breach:
                events.append(self._event(rule, "revised", t, v, breach, old_value=old[0]))
        value_now, breach_now = evaluation[latest]
        before = self.last.get(latest)  # late data may have revised the latest interval itself
        revised_from = before[0] if before is not None and before[0] != value_now else None
        if breach_now and self.status != "firing":
            self.status = "firing"
            events.append(self._event(rule, "firing", latest, value_now, True, old_value=revised_from))
        elif not breach_now and self.status == "firing":
            self.status = "resolved"
            events.append(self._event(rule, "resolved", latest, value_now, False, old_value=revised_from))
        self.last = dict(evaluation)
        snoozed = self.snoozed_until is not None and now < self.snoozed_until
        for e in events:
            e["snoozed"] = snoozed
        self.history.extend(events)
        return events

    @staticmethod
    def _event(rule: Rule, kind: str, t: datetime, v: float, breach: bool, old_value: float | None = None) -> dict[str, Any]:
        key = f"{rule.id}|{kind}|{t.isoformat()}|{v!r}|{old_value!r}"
        return {"id": hashlib.sha256(key.encode()).hexdigest()[:24], "alert_id": rule.id, "type": kind,
                "interval_start": t.isoformat(), "value": v, "breached": breach, "old_value": old_value,
                "condition": rule.condition, "threshold": rule.threshold}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(rule: Rule, event: dict[str, Any], *, attempts: int = 5, backoff_s: float = 0.2, timeout_s: float = 5.0) -> bool:
    """POST one transition; True once a 2xx was received."""
    body = json.dumps(event, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "X-Eventpipe-Signature": sign(rule.secret, body),
               "X-Eventpipe-Event-Id": event["id"]}
    for attempt in range(attempts):
        try:
            r = httpx.post(rule.webhook_url, content=body, headers=headers, timeout=timeout_s)
            if 200 <= r.status_code < 300:
                return True
            if r.status_code < 500 and r.status_code != 429:
                return False
        except httpx.HTTPError:
            pass
        time.sleep(backoff_s * 2**attempt)
    return False
