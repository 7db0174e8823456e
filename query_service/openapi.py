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
]


def _op(summary: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [{"basic": []}], "parameters": extra + _COMMON,
                    "responses": {"200": {"description": "Amplitude-shaped JSON: {data: …}"},
                                  "400": {"description": "a malformed parameter: {code, error, parameter}"},
                                  "401": {"description": "missing or wrong api_key:secret_key"}}}}


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
            "/api/sql": _sql_op(),  # issue 14: query_service/sql_api.py
        },
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
