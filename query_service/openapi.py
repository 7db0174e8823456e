"""``/openapi.json`` and ``/docs``: the API described for humans and client generators."""

from __future__ import annotations

from typing import Any

_COMMON = [
    {"name": "start", "in": "query", "required": True, "schema": {"type": "string", "pattern": "^\\d{8}$"},
     "description": "first day, YYYYMMDD, in the project's time zone"},
    {"name": "end", "in": "query", "required": True, "schema": {"type": "string", "pattern": "^\\d{8}$"},
     "description": "last day (inclusive), YYYYMMDD"},
    {"name": "s", "in": "query", "schema": {"type": "string"},
     "description": 'segment filters, JSON [{"prop":"country","op":"is","values":["DE"]}]; ops: is, is not, contains, '
                    "does not contain, less, less or equal, greater, greater or equal, set is, set is not"},
    {"name": "g", "in": "query", "schema": {"type": "string"}, "description": "user property to group by (gp:NAME for custom)"},
    {"name": "include_bots", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}},
    {"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["blocking", "force", "cache_only", "async"]},
     "description": "result cache (issue 14): blocking (default: cached else compute), force, cache_only (404 when "
                    "absent), async (cached or previous answer now, recompute in the background; 202 with none)"},
]


def _op(summary: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [{"basic": []}], "parameters": extra + _COMMON,
                    "responses": {"200": {"description": "Amplitude-shaped JSON: {data: …} plus is_cached, computed_at, "
                                                         "data_version, incomplete, provisional (interval labels)"},
                                  "400": {"description": "a malformed parameter: {code, error, parameter}"},
                                  "401": {"description": "missing or wrong api_key:secret_key"},
                                  "404": {"description": "refresh=cache_only and no cached answer"},
                                  "429": {"description": "a query limit of the project: {code, error, limit, cost, "
                                                         "retry_after}, Retry-After header"}}}}


def _sql_op() -> dict[str, Any]:
    err = {"type": "object", "properties": {"code": {"type": "integer"}, "error": {"type": "string"},
                                            "parameter": {"type": "string"}}}
    return {"post": {
        "summary": "Read-only SQL over the caller's project (ClickHouse dialect, FUNNEL() and RETENTION())",
        "description": "SELECT / WITH … SELECT / EXPLAIN only; tables: events (deduplicated, bots excluded) and the "
                       "dbt marts, each scoped to the caller's project; no table functions, system.*, other "
                       "databases, SETTINGS, FORMAT, INTO OUTFILE. FUNNEL(<window>, <cond1>, …[, "
                       "'ordered'|'unordered'|'sequential']) → level 0…N; RETENTION(<start>, <return>, <N>[, "
                       "'n-day'|'rolling']) → 0/1; projectTimezone(). Limits: SQL_MAX_EXECUTION_TIME, "
                       "SQL_MAX_MEMORY_USAGE, SQL_MAX_RESULT_ROWS.",
        "security": [{"basic": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["query"], "additionalProperties": False,
            "properties": {"query": {"type": "string"},
                           "params": {"type": "object", "description": "values of {name:Type} placeholders"}}}}}},
        "responses": {
            "200": {"description": "ClickHouse's JSON output format plus cache fields", "content": {"application/json": {
                "schema": {"type": "object", "properties": {
                    "meta": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "type": {"type": "string"}}}},
                    "data": {"type": "array", "items": {"type": "object"}},
                    "rows": {"type": "integer"}, "statistics": {"type": "object"},
                    "is_cached": {"type": "boolean"}, "computed_at": {"type": "string", "format": "date-time"},
                    "data_version": {"type": ["string", "null"]}}}}}},
            "400": {"description": "not a read-only SELECT, bad syntax, a missing parameter or a limit exceeded",
                    "content": {"application/json": {"schema": err}}},
            "401": {"description": "missing or wrong api_key:secret_key"},
            "403": {"description": "a table, database or function the caller may not read",
                    "content": {"application/json": {"schema": err}}},
            "503": {"description": "ClickHouse cannot answer now"}}}}


def spec() -> dict[str, Any]:
    e = {"name": "e", "in": "query", "required": True, "schema": {"type": "string"},
         "description": 'event JSON {"event_type", "filters":[{"subprop_type","subprop_key","subprop_op","subprop_value"}], '
                        '"group_by":[{"type","value"}]}; special: _active, _all, _new'}
    i = {"name": "i", "in": "query", "schema": {"type": "integer", "enum": [-300000, -3600000, 1, 7, 30]}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventpipe query API (Amplitude Dashboard REST API v2 compatible)", "version": "1"},
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                                                     "description": "api_key:secret_key"}}},
        "paths": {
            "/api/2/events/segmentation": _op("Event segmentation", [
                e, {"name": "e2", "in": "query", "schema": {"type": "string"}},
                {"name": "m", "in": "query", "schema": {"type": "string", "enum": [
                    "uniques", "totals", "pct_dau", "average", "sums", "value_avg", "formula"]}},
                {"name": "formula", "in": "query", "schema": {"type": "string"}}, i,
                {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 1000}}]),
            "/api/2/funnels": _op("Funnel analysis", [
                {**e, "description": "one e per step (event JSON with filters)"},
                {"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["ordered", "unordered", "sequential"]}},
                {"name": "n", "in": "query", "schema": {"type": "string", "enum": ["active", "new"]}},
                {"name": "cs", "in": "query", "schema": {"type": "integer"}, "description": "conversion window, seconds"}]),
            "/api/2/retention": _op("Retention analysis", [
                {"name": "se", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "re", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "rm", "in": "query", "schema": {"type": "string", "enum": ["n-day", "rolling", "bracket"]}},
                {"name": "rb", "in": "query", "schema": {"type": "string"}}, i]),
            "/api/2/users": _op("Active or new users", [
                {"name": "m", "in": "query", "schema": {"type": "string", "enum": ["active", "new"]}}, i]),
            **_insights(),
            "/api/sql": _sql_op(),  # issue 14: query_service/sql_api.py
        },
    }


def _plain(summary: str, params: list[dict[str, Any]], response: str) -> dict[str, Any]:
    """An operation without the common range/segment parameters (user look-ups, realtime)."""
    return {"get": {"summary": summary, "security": [{"basic": []}],
                    "parameters": params + [_COMMON[-1]],
                    "responses": {"200": {"description": response},
                                  "400": {"description": "a malformed parameter: {code, error, parameter}"},
                                  "401": {"description": "missing or wrong api_key:secret_key"}}}}


def _insights() -> dict[str, Any]:
    """Sessions, user look-ups, realtime (Amplitude's shapes), lifecycle and stickiness (ours)."""
    q = "query"
    bins = [{"name": n, "in": q, "schema": {"type": t}, "description": d} for n, t, d in (
        ("timeHistogramConfigBinTimeUnit", "string", "seconds | minutes | hours (custom bins need unit, Min and Max)"),
        ("timeHistogramConfigBinMin", "integer", "first bin edge, in the unit"),
        ("timeHistogramConfigBinMax", "integer", "last bin edge, in the unit"),
        ("timeHistogramConfigBinSize", "integer", "bin width, in the unit (default: 10 equal bins)"))]
    user = {"name": "user", "in": q, "required": True, "schema": {"type": "string"},
            "description": "an actor id (amplitude_id), else an exact user_id or device_id, else a user_id prefix"}
    ev = {"name": "e", "in": q, "schema": {"type": "string"}, "description": "event JSON (default _active: any event)"}
    length = _op("Session length distribution (sessions = (actor_id, session_id), session_id -1 = none; length ="
                 " last - first event, capped at 1 day; a session counts on the local day it starts)", bins)
    length["get"]["responses"]["200"]["description"] = 'data: {series: [[sessions per bin]], xValues: ["0s-3s", …]}'
    peruser = _op("Average sessions per user per local day (sessions started / actors who started one)", [])
    peruser["get"]["responses"]["200"]["description"] = "data: {series, seriesLabels, seriesMeta, seriesCollapsed, xValues}"
    lifecycle = _op("Lifecycle: new / current / resurrected / dormant actors per whole calendar period (ours)", [
        ev, {"name": "i", "in": q, "schema": {"type": "integer", "enum": [1, 7, 30]}}])
    lifecycle["get"]["responses"]["200"]["description"] = (
        "data: {xValues: [period start, …], series: {new: […], current: […], resurrected: […], dormant: […]}}")
    sticky = _op("Stickiness: user-periods (weeks or months cut to the range) active on exactly / at least k days (ours)", [
        ev, {"name": "i", "in": q, "schema": {"type": "integer", "enum": [7, 30]}}])
    sticky["get"]["responses"]["200"]["description"] = "data: {xValues: [1..N], series: [[…]], cumulative: [[…]], total: n}"
    for op in (length, peruser, lifecycle, sticky):  # no group-by on these
        op["get"]["parameters"] = [p for p in op["get"]["parameters"] if p["name"] != "g"]
    return {
        "/api/2/sessions/length": length,
        "/api/2/sessions/peruser": peruser,
        "/api/2/usersearch": _plain("User search", [user], "{matches: [{amplitude_id, user_id, device_id, last_seen}],"
                                    " type: match_amplitude_id | match_user_or_device_id | match_user_prefix | nomatch}"),
        "/api/2/useractivity": _plain("A user's profile and events, most recent first", [
            user, {"name": "offset", "in": q, "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": q, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "{userData: {amplitude_id, user_id, device_ids, num_events, num_sessions, first_used, last_used, properties,"
            " …}, events: [...], offset, limit}; 404 naming user when nothing matches"),
        "/api/2/realtime": _plain("Realtime active users in 5-minute buckets, today vs yesterday (project zone)", [
            {"name": "i", "in": q, "schema": {"type": "integer", "enum": [5]}}],
            'data: {xValues: ["00:00", …, now], series: [[today], [yesterday]], seriesLabels: ["Today", "Yesterday"]}'),
        "/api/2/lifecycle": lifecycle,
        "/api/2/stickiness": sticky,
    }


def docs_html() -> str:
    rows = "".join(
        f"<li><code>GET {path}</code> — {op['get']['summary']}: "
        + ", ".join(f"<code>{p['name']}</code>" for p in op["get"]["parameters"]) + "</li>"
        if "get" in op else f"<li><code>POST {path}</code> — {op['post']['summary']}</li>"
        for path, op in spec()["paths"].items()
    )
    return ("<!doctype html><title>eventpipe query API</title><h1>eventpipe query API</h1>"
            "<p>Amplitude Dashboard REST API v2 shapes; HTTP Basic <code>api_key:secret_key</code>. "
            f"Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p><ul>{rows}</ul>")
