"""HTTP parameters -> typed queries for sessions, user look-ups, realtime, lifecycle and stickiness.

Kept apart from :mod:`query_service.params` (segmentation, funnels, retention) so each endpoint's parsing sits
next to its siblings; the helpers and error type are the same (every error names its parameter -> 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from query_service.params import (
    DateRange,
    EventSpec,
    ParamError,
    Params,
    PropFilter,
    Scope,
    _get,
    parse_event,
    parse_int,
    parse_interval,
    parse_range,
    parse_segments,
)

# Amplitude's default session-length bins (ms): chosen to approximate bounce behaviour; lengths are capped at 1 day.
DEFAULT_SESSION_BINS_MS = (0, 3_000, 10_000, 30_000, 60_000, 180_000, 600_000, 1_800_000, 3_600_000, 86_400_000)
SESSION_CAP_MS = 86_400_000
_UNIT_MS = {"seconds": 1_000, "minutes": 60_000, "hours": 3_600_000}
MAX_BINS = 200
MAX_ACTIVITY_LIMIT = 1000


@dataclass(frozen=True)
class SessionsQuery:
    scope: Scope
    range: DateRange
    segments: tuple[PropFilter, ...] = ()
    bins_ms: tuple[int, ...] = DEFAULT_SESSION_BINS_MS  # bin edges: bin k is [bins[k], bins[k+1])


@dataclass(frozen=True)
class UserLookup:
    scope: Scope
    user: str
    offset: int = 0
    limit: int = 1000


@dataclass(frozen=True)
class RealtimeQuery:
    scope: Scope
    now: datetime  # timezone-aware; the app passes the current time, tests a fixed one


@dataclass(frozen=True)
class LifecycleQuery:
    scope: Scope
    event: EventSpec
    range: DateRange
    interval: str = "day"  # day | week | month
    segments: tuple[PropFilter, ...] = ()


@dataclass(frozen=True)
class StickinessQuery:
    scope: Scope
    event: EventSpec
    range: DateRange
    interval: str = "week"  # week | month
    segments: tuple[PropFilter, ...] = ()


def parse_session_bins(params: Params) -> tuple[int, ...]:
    """Amplitude's ``timeHistogramConfigBin{TimeUnit,Min,Max,Size}``: custom bins need unit, min and max (size
    optional: 10 equal bins when absent); any of them missing -> the default bins (as Amplitude does)."""
    unit = _get(params, "timeHistogramConfigBinTimeUnit")
    names = ("timeHistogramConfigBinMin", "timeHistogramConfigBinMax", "timeHistogramConfigBinSize")
    given = [_get(params, n) for n in names]
    if unit is None and all(v is None for v in given):
        return DEFAULT_SESSION_BINS_MS
    if unit not in _UNIT_MS:
        raise ParamError("timeHistogramConfigBinTimeUnit", f"must be one of {', '.join(_UNIT_MS)}, got {str(unit)[:40]!r}")
    lo = parse_int(params, names[0], -1, 0, 10**7)
    hi = parse_int(params, names[1], -1, 0, 10**7)
    if lo < 0 or hi < 0:
        raise ParamError(names[0] if lo < 0 else names[1], "is required for custom session-length bins")
    if hi <= lo:
        raise ParamError(names[1], "must be greater than timeHistogramConfigBinMin")
    size = parse_int(params, names[2], 0, 1, 10**7) if given[2] is not None else None
    ms = _UNIT_MS[unit]
    if size is None:
        step = max(1, -(-(hi - lo) * ms // 10))
    else:
        step = size * ms
    if (hi - lo) * ms / step > MAX_BINS:
        raise ParamError(names[2], f"gives more than {MAX_BINS} bins")
    edges = list(range(lo * ms, hi * ms, step)) + [hi * ms]
    return tuple(edges)


def parse_sessions(params: Params, scope: Scope) -> SessionsQuery:
    return SessionsQuery(scope=scope, range=parse_range(params), segments=parse_segments(params),
                         bins_ms=parse_session_bins(params))


def parse_user_lookup(params: Params, scope: Scope, *, paged: bool) -> UserLookup:
    user = _get(params, "user")
    if user is None or not user.strip() or len(user) > 1024:
        raise ParamError("user", "is required: an actor id (amplitude_id), user_id or device_id")
    if not paged:
        return UserLookup(scope=scope, user=user.strip())
    return UserLookup(scope=scope, user=user.strip(), offset=parse_int(params, "offset", 0, 0, 10**9),
                      limit=parse_int(params, "limit", 1000, 1, MAX_ACTIVITY_LIMIT))


def parse_realtime(params: Params, scope: Scope, now: datetime) -> RealtimeQuery:
    i = _get(params, "i")
    if i is not None and i not in ("5", "-300000"):
        raise ParamError("i", f"realtime buckets are 5 minutes: i must be 5 (or -300000), got {i[:40]!r}")
    return RealtimeQuery(scope=scope, now=now)


def parse_lifecycle(params: Params, scope: Scope) -> LifecycleQuery:
    text = _get(params, "e")
    event = parse_event("e", text, allow_special=("_active", "_all")) if text else EventSpec("_active")
    return LifecycleQuery(scope=scope, event=event, range=parse_range(params), interval=parse_interval(params, (1, 7, 30)),
                          segments=parse_segments(params))


def parse_stickiness(params: Params, scope: Scope) -> StickinessQuery:
    text = _get(params, "e")
    event = parse_event("e", text, allow_special=("_active", "_all")) if text else EventSpec("_active")
    interval = parse_interval(params, (7, 30)) if _get(params, "i") is not None else "week"
    return StickinessQuery(scope=scope, event=event, range=parse_range(params), interval=interval,
                           segments=parse_segments(params))
