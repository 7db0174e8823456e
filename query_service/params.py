"""HTTP parameters -> typed queries. Every error names its parameter (the app answers 400 with it).

Parameter names, defaults and JSON shapes follow Amplitude's Dashboard REST API v2: ``e`` is an event
JSON ``{"event_type", "filters": [{"subprop_type", "subprop_key", "subprop_op", "subprop_value"}],
"group_by": [{"type", "value"}]}``, ``s`` a list of segment filters ``[{"prop", "op", "values"}]``, ``g`` a
user property to group by, ``start``/``end`` dates ``YYYYMMDD`` in the project's time zone (both inclusive).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

MAX_RANGE_DAYS = 400
MAX_STEPS = 10
FILTER_OPS = (
    "is", "is not", "contains", "does not contain", "less", "less or equal", "greater", "greater or equal",
    "set is", "set is not",
)
SPECIAL_EVENTS = ("_active", "_all", "_new")
INTERVALS = {-300000: "5min", -3600000: "hour", 1: "day", 7: "week", 30: "month"}
SEGMENTATION_METRICS = ("uniques", "totals", "pct_dau", "average", "sums", "value_avg", "histogram", "formula")
FUNNEL_MODES = ("ordered", "unordered", "sequential")
RETENTION_MODES = ("n-day", "rolling", "bracket")
DEFAULT_CONVERSION_WINDOW_S = 30 * 86_400  # Amplitude's default `cs` (30 days)


class ParamError(ValueError):
    """A malformed parameter: ``param`` names it, the message says what is expected."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass(frozen=True)
class Scope:
    """Whose data and how to read it: filled by the app from the authenticated key, never from parameters."""

    project: str
    timezone: str = "UTC"
    include_bots: bool = False
    # Routing (from settings, not parameters): UTC days before ``hot_from`` are past the ClickHouse TTL and are
    # read from the enriched lake under ``lake_path`` (a local directory, or the http(s) URL of an S3 bucket/prefix;
    # None = everything from ClickHouse).
    hot_from: date | None = None
    lake_path: str | None = None


@dataclass(frozen=True)
class Prop:
    """A property reference: ``kind`` is ``event`` (event_properties) or ``user`` (built-in column or user_properties)."""

    kind: str
    key: str


@dataclass(frozen=True)
class PropFilter:
    prop: Prop
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class EventSpec:
    event_type: str
    filters: tuple[PropFilter, ...] = ()
    group_by: tuple[Prop, ...] = ()


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True)
class SegmentationQuery:
    scope: Scope
    events: tuple[EventSpec, ...]
    range: DateRange
    metric: str = "uniques"
    interval: str = "day"
    segments: tuple[PropFilter, ...] = ()
    group_by: tuple[Prop, ...] = ()
    value_prop: Prop | None = None  # sums / value_avg / histogram
    formula: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class FunnelQuery:
    scope: Scope
    steps: tuple[EventSpec, ...]
    range: DateRange
    mode: str = "ordered"
    new_users: bool = False
    window_s: int = DEFAULT_CONVERSION_WINDOW_S
    segments: tuple[PropFilter, ...] = ()
    group_by: tuple[Prop, ...] = ()
    limit: int = 100


@dataclass(frozen=True)
class RetentionQuery:
    scope: Scope
    start_event: EventSpec
    return_event: EventSpec
    range: DateRange
    mode: str = "n-day"
    brackets: tuple[tuple[int, int], ...] = ()
    interval: str = "day"
    segments: tuple[PropFilter, ...] = ()
    group_by: tuple[Prop, ...] = ()
    today: date | None = None  # the project's local today (set by the app; fixed in tests)


@dataclass(frozen=True)
class UsersQuery:
    scope: Scope
    range: DateRange
    metric: str = "active"  # active | new
    interval: str = "day"
    segments: tuple[PropFilter, ...] = ()
    group_by: tuple[Prop, ...] = ()


# --- parsing helpers --------------------------------------------------------------------------------------

Params = Mapping[str, Any]  # a Starlette QueryParams (getlist) or a plain dict of str | list[str]


def _getlist(params: Params, name: str) -> list[str]:
    if hasattr(params, "getlist"):
        return list(params.getlist(name))
    v = params.get(name)
    if v is None:
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


def _get(params: Params, name: str) -> str | None:
    values = _getlist(params, name)
    if len(values) > 1:
        raise ParamError(name, "given more than once")
    return values[0] if values else None


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ParamError(name, "is not valid JSON") from None


def _str(name: str, value: Any, *, max_len: int = 1024) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ParamError(name, f"must be a non-empty string of at most {max_len} characters")
    return value


def parse_date(name: str, text: str | None) -> date:
    if text is None:
        raise ParamError(name, "is required (YYYYMMDD)")
    if not re.fullmatch(r"\d{8}", text):
        raise ParamError(name, f"must be a date YYYYMMDD, got {text[:40]!r}")
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ParamError(name, f"is not a valid date: {text!r}") from None


def parse_range(params: Params) -> DateRange:
    start, end = parse_date("start", _get(params, "start")), parse_date("end", _get(params, "end"))
    if end < start:
        raise ParamError("end", "is before start")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ParamError("end", f"the range is longer than {MAX_RANGE_DAYS} days")
    return DateRange(start, end)


def parse_prop(name: str, kind: Any, key: Any) -> Prop:
    if kind not in ("event", "user"):
        raise ParamError(name, f"property type must be 'event' or 'user', got {kind!r}")
    return Prop(kind, _str(name, key))


def parse_values(name: str, values: Any) -> tuple[str, ...]:
    if not isinstance(values, list) or not values or len(values) > 1000:
        raise ParamError(name, "values must be a non-empty list (at most 1000)")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ParamError(name, "values must be strings or numbers")
        out.append(v if isinstance(v, str) else json.dumps(v))
    return tuple(out)


def parse_op(name: str, op: Any, values: tuple[str, ...]) -> str:
    if op not in FILTER_OPS:
        raise ParamError(name, f"op must be one of {', '.join(FILTER_OPS)}; got {op!r}")
    if op in ("less", "less or equal", "greater", "greater or equal"):
        try:
            float(values[0])
        except ValueError:
            raise ParamError(name, f"{op} needs a number, got {values[0]!r}") from None
    return op


def parse_event(name: str, text: str | None, *, allow_special: Sequence[str] = SPECIAL_EVENTS) -> EventSpec:
    if text is None:
        raise ParamError(name, "is required (an event JSON with event_type)")
    obj = _json(name, text)
    if isinstance(obj, str):  # a bare event name is accepted too
        obj = {"event_type": obj}
    if not isinstance(obj, dict):
        raise ParamError(name, "must be a JSON object with event_type")
    etype = obj.get("event_type")
    if not isinstance(etype, str) or not etype or len(etype) > 1024:
        raise ParamError(name, "event_type must be a non-empty string")
    if etype.startswith("_") and etype in SPECIAL_EVENTS and etype not in allow_special:
        raise ParamError(name, f"event_type {etype} is not allowed here (allowed: {', '.join(allow_special) or 'none'})")
    raw_filters = obj.get("filters", [])
    if not isinstance(raw_filters, list) or len(raw_filters) > 50:
        raise ParamError(name, "filters must be a list (at most 50)")
    filters = []
    for i, f in enumerate(raw_filters):
        where = f"{name}.filters[{i}]"
        if not isinstance(f, dict):
            raise ParamError(where, "must be an object with subprop_type, subprop_key, subprop_op, subprop_value")
        prop = parse_prop(where, f.get("subprop_type", "event"), f.get("subprop_key"))
        values = parse_values(where, f.get("subprop_value"))
        filters.append(PropFilter(prop, parse_op(where, f.get("subprop_op", "is"), values), values))
    raw_groups = obj.get("group_by", [])
    if not isinstance(raw_groups, list) or len(raw_groups) > 2:
        raise ParamError(name, "group_by must be a list of at most 2 properties")
    groups = []
    for i, g in enumerate(raw_groups):
        where = f"{name}.group_by[{i}]"
        if not isinstance(g, dict):
            raise ParamError(where, "must be an object with type and value")
        groups.append(parse_prop(where, g.get("type", "event"), g.get("value")))
    return EventSpec(etype, tuple(filters), tuple(groups))


def parse_segments(params: Params) -> tuple[PropFilter, ...]:
    text = _get(params, "s")
    if text is None:
        return ()
    obj = _json("s", text)
    if not isinstance(obj, list) or len(obj) > 50:
        raise ParamError("s", "must be a JSON list of segment filters {prop, op, values}")
    out = []
    for i, f in enumerate(obj):
        where = f"s[{i}]"
        if not isinstance(f, dict):
            raise ParamError(where, "must be an object {prop, op, values}")
        key = _str(where, f.get("prop"))
        kind = "event" if key.startswith("ep:") else "user"
        prop = Prop(kind, key.removeprefix("ep:"))
        values = parse_values(where, f.get("values"))
        out.append(PropFilter(prop, parse_op(where, f.get("op", "is"), values), values))
    return tuple(out)


def parse_group(params: Params, name: str = "g") -> tuple[Prop, ...]:
    text = _get(params, name)
    if text is None or text == "":
        return ()
    key = _str(name, text)
    return (Prop("event", key.removeprefix("ep:")) if key.startswith("ep:") else Prop("user", key),)


def parse_int(params: Params, name: str, default: int, lo: int, hi: int) -> int:
    text = _get(params, name)
    if text is None:
        return default
    if not re.fullmatch(r"-?\d{1,12}", text.strip()):
        raise ParamError(name, f"must be an integer, got {text[:40]!r}")
    v = int(text)
    if not lo <= v <= hi:
        raise ParamError(name, f"must be between {lo} and {hi}, got {v}")
    return v


def parse_bool(params: Params, name: str) -> bool:
    text = _get(params, name)
    if text is None:
        return False
    if text.lower() in ("1", "true"):
        return True
    if text.lower() in ("0", "false", ""):
        return False
    raise ParamError(name, f"must be 0 or 1, got {text[:40]!r}")


def parse_interval(params: Params, allowed: Sequence[int] = tuple(INTERVALS)) -> str:
    text = _get(params, "i")
    if text is None:
        return "day"
    try:
        i = int(text)
    except ValueError:
        raise ParamError("i", f"must be one of {', '.join(map(str, allowed))}, got {text[:40]!r}") from None
    if i not in allowed:
        raise ParamError("i", f"must be one of {', '.join(map(str, allowed))}, got {i}")
    return INTERVALS[i]


def parse_choice(params: Params, name: str, choices: Sequence[str], default: str) -> str:
    text = _get(params, name)
    if text is None:
        return default
    if text not in choices:
        raise ParamError(name, f"must be one of {', '.join(choices)}, got {text[:40]!r}")
    return text


def _check_groups(groups: tuple[Prop, ...], limit: int, name: str = "g") -> tuple[Prop, ...]:
    if len(groups) > limit:
        raise ParamError(name, f"at most {limit} group-by properties in all")
    return groups


# --- one parser per query type ----------------------------------------------------------------------------

def parse_segmentation(params: Params, scope: Scope) -> SegmentationQuery:
    events = [parse_event("e", _get(params, "e"))]
    if (e2 := _get(params, "e2")) is not None:
        events.append(parse_event("e2", e2))
    metric = parse_choice(params, "m", SEGMENTATION_METRICS, "uniques")
    if metric == "histogram":  # Amplitude's m=histogram: its response shape is undocumented, so a clear 400
        raise ParamError("m", "m=histogram is not supported: Amplitude does not document its response shape; "
                              "use sums or value_avg")
    value_prop = None
    formula = None
    if metric in ("sums", "value_avg", "histogram"):
        if not events[0].group_by:
            raise ParamError("e", f"m={metric} needs the property to aggregate as the first group_by of e")
        value_prop = events[0].group_by[0]
        events[0] = EventSpec(events[0].event_type, events[0].filters, events[0].group_by[1:])
    if metric == "formula":
        formula = _get(params, "formula")
        if not formula:
            raise ParamError("formula", "is required with m=formula (e.g. UNIQUES(A)/UNIQUES(B))")
        from query_service.formula import parse_formula

        parse_formula(formula, len(events))
    groups = _check_groups(parse_group(params) + events[0].group_by, 2)
    return SegmentationQuery(
        scope=scope, events=tuple(events), range=parse_range(params), metric=metric,
        interval=parse_interval(params), segments=parse_segments(params), group_by=groups, value_prop=value_prop,
        formula=formula, limit=parse_int(params, "limit", 100, 1, 1000),
    )


def parse_funnel(params: Params, scope: Scope) -> FunnelQuery:
    raw = _getlist(params, "e")
    if len(raw) < 1 or len(raw) > MAX_STEPS:
        raise ParamError("e", f"give 1 to {MAX_STEPS} steps, one e parameter per step")
    steps = tuple(parse_event(f"e[{i}]", text, allow_special=()) for i, text in enumerate(raw))
    n = parse_choice(params, "n", ("active", "new"), "active")
    return FunnelQuery(
        scope=scope, steps=steps, range=parse_range(params), mode=parse_choice(params, "mode", FUNNEL_MODES, "ordered"),
        new_users=n == "new", window_s=parse_int(params, "cs", DEFAULT_CONVERSION_WINDOW_S, 1, 366 * 86_400),
        segments=parse_segments(params), group_by=_check_groups(parse_group(params), 1),
        limit=parse_int(params, "limit", 100, 1, 1000),
    )


def parse_brackets(params: Params) -> tuple[tuple[int, int], ...]:
    text = _get(params, "rb")
    if text is None:
        raise ParamError("rb", "is required with rm=bracket, e.g. [[0,4],[5,9]]")
    obj = _json("rb", text)
    if not isinstance(obj, list) or not obj or len(obj) > 60:
        raise ParamError("rb", "must be a JSON list of [from, to] day ranges")
    out = []
    for b in obj:
        if (not isinstance(b, list) or len(b) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in b)
                or not 0 <= b[0] <= b[1] <= 3660):
            raise ParamError("rb", "each bracket is [from, to] with 0 <= from <= to")
        out.append((b[0], b[1]))
    return tuple(out)


def parse_retention(params: Params, scope: Scope, today: date | None = None) -> RetentionQuery:
    rm_text = _get(params, "rm")
    mode = "n-day" if rm_text in (None, "", "n-day", "nday") else rm_text
    if mode not in RETENTION_MODES:
        raise ParamError("rm", f"must be n-day (default), rolling or bracket, got {rm_text[:40]!r}")
    start_event = parse_event("se", _get(params, "se"), allow_special=("_new", "_active"))
    return_event = parse_event("re", _get(params, "re"), allow_special=("_all", "_active"))
    return RetentionQuery(
        scope=scope, start_event=start_event, return_event=return_event, range=parse_range(params), mode=mode,
        brackets=parse_brackets(params) if mode == "bracket" else (), interval=parse_interval(params, (1, 7, 30)),
        segments=parse_segments(params), group_by=_check_groups(parse_group(params), 1), today=today,
    )


def parse_users(params: Params, scope: Scope) -> UsersQuery:
    return UsersQuery(scope=scope, range=parse_range(params), metric=parse_choice(params, "m", ("active", "new"), "active"),
                      interval=parse_interval(params, (1, 7, 30)), segments=parse_segments(params),
                      group_by=_check_groups(parse_group(params), 1))


