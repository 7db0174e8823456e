"""User look-ups (``/api/2/usersearch``, ``/api/2/useractivity``): which actor a ``user`` is, and its stream.

Matching rule (over the project's deduplicated events, bots excluded unless ``include_bots=1``, all history): the
``user`` text is tried, in this order of precedence, as an actor id (``actor_id`` of ``analytics.events``: our
``amplitude_id``), an exact ``user_id`` or ``device_id`` of any event, then a ``user_id`` prefix. The first tier
with a match is the answer (Amplitude's ``type``: ``match_amplitude_id`` / ``match_user_or_device_id`` /
``match_user_prefix``; ``nomatch`` when none); inside a tier, the most recently active actor comes first.
``useractivity`` reads the first match's whole history (``userData``) and its events, most recent first
(``event_time`` then ``insert_id`` descending), ``offset``/``limit`` paging.
"""

from __future__ import annotations

from typing import Any

from query_service.compile.common import Binder, Compiled, events_source
from query_service.params_insights import UserLookup

MAX_MATCHES = 100
TIERS = ("match_amplitude_id", "match_user_or_device_id", "match_user_prefix")
EVENT_COLUMNS = (
    "event_time", "insert_id", "event_type", "actor_id", "session_id", "event_properties", "user_properties",
    "user_id", "device_id", "country", "city", "region", "platform", "os_name", "os_version", "device_model",
    "app_version", "library", "revenue",
)


def compile_search(q: UserLookup) -> Compiled:
    b = Binder()
    u = b.bind(q.user, "String")
    src = events_source(b, q.scope, None, None, ("event_time", "insert_id", "actor_id", "user_id", "device_id"))
    sql = (
        "SELECT actor_id, toInt32(min(multiIf(actor_id = {u}, 0, ifNull(user_id, '') = {u} OR ifNull(device_id, '') = {u},"
        " 1, 2))) AS tier, argMax(ifNull(user_id, ''), event_time) AS last_user_id,"
        " argMax(ifNull(device_id, ''), event_time) AS last_device_id, max(event_time) AS last_seen"
        f" FROM {src} WHERE actor_id = {{u}} OR user_id = {{u}} OR device_id = {{u}}"
        " OR startsWith(ifNull(user_id, ''), {u})"
        f" GROUP BY actor_id ORDER BY tier, last_seen DESC, actor_id LIMIT {MAX_MATCHES * 3}"
    ).replace("{u}", u)
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake, utc_days=(),
                    all_history=True)


def shape_search(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Amplitude's ``{"matches": [{"user_id", "amplitude_id"}…], "type"}`` (plus ``device_id`` and ``last_seen``,
    UTC ISO, of the actor's latest event); only the best tier's matches."""
    if not rows:
        return {"matches": [], "type": "nomatch"}
    best = min(r["tier"] for r in rows)
    matches = [{"amplitude_id": r["actor_id"], "user_id": r["last_user_id"] or None, "device_id": r["last_device_id"] or None,
                "last_seen": r["last_seen"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
               for r in rows if r["tier"] == best][:MAX_MATCHES]
    return {"matches": matches, "type": TIERS[best]}


def compile_user_data(q: UserLookup, actor_id: str) -> Compiled:
    b = Binder()
    a = b.bind(actor_id, "String")
    z = b.bind(q.scope.timezone, "String")
    src = events_source(b, q.scope, None, None, EVENT_COLUMNS)
    last = "argMax({c}, (event_time, insert_id))"
    cols = {"user_id": "ifNull(user_id, '')", "country": "ifNull(country, '')", "city": "ifNull(city, '')",
            "region": "ifNull(region, '')", "platform": "ifNull(platform, '')", "os": "ifNull(os_name, '')",
            "device": "ifNull(device_model, '')", "version": "ifNull(app_version, '')",
            "user_properties": "user_properties"}
    picks = ", ".join(f"{last.format(c=expr)} AS u_{name}" for name, expr in cols.items())
    sql = (f"SELECT toInt64(count()) AS num_events, toInt64(uniqExactIf(session_id, session_id >= 0)) AS num_sessions,"
           f" toString(toDate(min(event_time), {z})) AS first_used, toString(toDate(max(event_time), {z})) AS last_used,"
           f" arraySort(groupUniqArrayIf(ifNull(device_id, ''), ifNull(device_id, '') != '')) AS u_device_ids,"
           f" toFloat64(sum(ifNull(revenue, 0))) AS u_revenue, {picks}"
           f" FROM {src} WHERE actor_id = {a} HAVING count() > 0")
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake, utc_days=(),
                    all_history=True)


def compile_activity(q: UserLookup, actor_id: str) -> Compiled:
    b = Binder()
    a = b.bind(actor_id, "String")
    src = events_source(b, q.scope, None, None, EVENT_COLUMNS)
    cols = ", ".join(c for c in EVENT_COLUMNS)
    sql = (f"SELECT {cols} FROM {src} WHERE actor_id = {a} ORDER BY event_time DESC, insert_id DESC"
           f" LIMIT {b.bind(q.limit, 'UInt64')} OFFSET {b.bind(q.offset, 'UInt64')}")
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake, utc_days=(),
                    all_history=True)


def _json(text: str | None) -> Any:
    import orjson

    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}


def shape_user_data(actor_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """Amplitude's ``userData``: ids, counts, first/last local day, the latest event's location/device and user
    properties (``properties``)."""
    return {
        "amplitude_id": actor_id, "canonical_amplitude_id": actor_id, "user_id": row["u_user_id"] or None,
        "device_ids": list(row["u_device_ids"]), "num_events": int(row["num_events"]),
        "num_sessions": int(row["num_sessions"]), "first_used": row["first_used"], "last_used": row["last_used"],
        "country": row["u_country"] or None, "city": row["u_city"] or None, "region": row["u_region"] or None,
        "platform": row["u_platform"] or None, "os": row["u_os"] or None, "device": row["u_device"] or None,
        "version": row["u_version"] or None, "revenue": row["u_revenue"], "properties": _json(row["u_user_properties"]),
    }


def shape_event(r: dict[str, Any]) -> dict[str, Any]:
    """One event as Amplitude's useractivity lists it (``event_time`` UTC ``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    return {
        "event_type": r["event_type"], "event_time": r["event_time"].strftime("%Y-%m-%d %H:%M:%S.%f"),
        "insert_id": r["insert_id"], "amplitude_id": r["actor_id"], "user_id": r["user_id"], "device_id": r["device_id"],
        "session_id": int(r["session_id"]), "event_properties": _json(r["event_properties"]),
        "user_properties": _json(r["user_properties"]), "country": r["country"], "city": r["city"],
        "region": r["region"], "platform": r["platform"], "os_name": r["os_name"], "os_version": r["os_version"],
        "device_model": r["device_model"], "app_version": r["app_version"], "library": r["library"],
        "revenue": r["revenue"],
    }
