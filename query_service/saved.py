"""Saved charts and dashboards for the web UI (``/api/web/charts``, ``/api/web/dashboards``), plus the
project's event types and properties the UI's pickers offer (``/api/web/event-types``).

Every route authenticates like the API (Basic ``api_key:secret_key``, or the session cookie turned into
Basic by :class:`query_service.web_auth.SessionAuthMiddleware`) and sees only its project's rows.
Bodies are JSON; bad input is a 400 ``{"error": …}`` naming the field; an unknown id is 404.

* ``GET /api/web/charts`` → ``{"charts": [chart…]}``; ``POST`` ``{"name", "kind", "definition"}`` → the chart
  (201); ``GET|PUT|DELETE /api/web/charts/{id}`` (PUT takes ``name`` and/or ``definition``). A chart is
  ``{"id", "name", "kind", "definition", "created_at", "updated_at"}``; ``definition`` is the page's query
  parameters as the UI sends them to ``/api/2/…``; its shareable URL is ``/#/charts/{id}``.
* ``GET /api/web/dashboards`` → ``{"dashboards": […]}``; ``POST`` ``{"name", "layout"}``;
  ``GET|PUT|DELETE /api/web/dashboards/{id}``. ``layout`` is a list of tiles ``{"chart_id", "x", "y", "w", "h"}``
  on a 12-column grid.
* ``GET /api/web/funnel-users`` — the ``/api/2/funnels`` parameters plus ``step`` (1-based) →
  ``{"users": [actor_id…], "step", "total"}``: up to ``limit`` (default 100, ≤ 1000) actors whose funnel path
  reaches that step, from the API's own funnel paths (``compile.funnel.compile_funnel_actors``), so the list
  always agrees with the bar's count (``total``).
* ``GET /api/web/event-types`` → ``{"event_types": [{"name", "count", "planned"}], "properties": {"event": […],
  "user": […]}}``: the event types seen in ``analytics.events`` for the project (bots excluded, as the API
  does; read-only ClickHouse user), most frequent first,
  joined with the tracking plan's, and the property names a filter or group-by can use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventpipe_core.metadata import ChartStore, MetadataError, MetadataStore
from eventpipe_core.metadata.projects_settings import get_timezone
from eventpipe_core.settings import Settings
from query_service.web_auth import Verify, request_project

# Columns of analytics.events a filter or group-by can name as "user" properties (Amplitude's built-ins).
BUILTIN_USER_PROPERTIES = (
    "country", "region", "city", "platform", "os_name", "os_version", "device_brand", "device_model", "language",
    "app_version", "carrier", "library",
)

Handler = Callable[[Request, str], Awaitable[Response]]


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _id(request: Request) -> int | None:
    raw = request.path_params.get("id", "")
    return int(raw) if raw.isdigit() and len(raw) < 10 else None


async def _body(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def saved_routes(store: ChartStore, meta_store: MetadataStore, settings: Settings, verify: Verify) -> list[Route]:
    engines: list[Any] = []

    def engine() -> Any:
        if not engines:
            from query_service.engine import Engine

            engines.append(Engine.from_settings(settings))
        return engines[0]

    def authed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            project = await asyncio.to_thread(request_project, request, verify)
            if project is None:
                return _err(401, "missing or invalid credentials (Basic api_key:secret_key or a signed-in session)")
            try:
                return await handler(request, project)
            except MetadataError as exc:
                return _err(400, str(exc))
        return endpoint

    async def list_charts(request: Request, project: str) -> Response:
        return JSONResponse({"charts": await asyncio.to_thread(store.list_charts, project)})

    async def create_chart(request: Request, project: str) -> Response:
        body = await _body(request)
        if body is None:
            return _err(400, "body must be a JSON object with name, kind and definition")
        chart = await asyncio.to_thread(store.create_chart, project, body.get("name"), body.get("kind"),
                                        body.get("definition"))
        return JSONResponse(chart, status_code=201)

    async def one_chart(request: Request, project: str) -> Response:
        chart_id = _id(request)
        if chart_id is None:
            return _err(404, "no such chart")
        if request.method == "DELETE":
            done = await asyncio.to_thread(store.delete_chart, project, chart_id)
            return JSONResponse({"deleted": chart_id}) if done else _err(404, "no such chart")
        if request.method == "PUT":
            body = await _body(request)
            if body is None:
                return _err(400, "body must be a JSON object with name and/or definition")
            chart = await asyncio.to_thread(store.update_chart, project, chart_id, body.get("name"), body.get("definition"))
        else:
            chart = await asyncio.to_thread(store.get_chart, project, chart_id)
        return JSONResponse(chart) if chart else _err(404, "no such chart")

    async def list_dashboards(request: Request, project: str) -> Response:
        return JSONResponse({"dashboards": await asyncio.to_thread(store.list_dashboards, project)})

    async def create_dashboard(request: Request, project: str) -> Response:
        body = await _body(request)
        if body is None:
            return _err(400, "body must be a JSON object with name and layout")
        dash = await asyncio.to_thread(store.create_dashboard, project, body.get("name"), body.get("layout") or [])
        return JSONResponse(dash, status_code=201)

    async def one_dashboard(request: Request, project: str) -> Response:
        dash_id = _id(request)
        if dash_id is None:
            return _err(404, "no such dashboard")
        if request.method == "DELETE":
            done = await asyncio.to_thread(store.delete_dashboard, project, dash_id)
            return JSONResponse({"deleted": dash_id}) if done else _err(404, "no such dashboard")
        if request.method == "PUT":
            body = await _body(request)
            if body is None:
                return _err(400, "body must be a JSON object with name and/or layout")
            dash = await asyncio.to_thread(store.update_dashboard, project, dash_id, body.get("name"), body.get("layout"))
        else:
            dash = await asyncio.to_thread(store.get_dashboard, project, dash_id)
        return JSONResponse(dash) if dash else _err(404, "no such dashboard")

    async def funnel_users(request: Request, project: str) -> Response:
        from query_service import params as P

        try:
            tz = await asyncio.to_thread(get_timezone, meta_store, project)
            scope = P.Scope(project=project, timezone=tz, include_bots=P.parse_bool(request.query_params, "include_bots"))
            q = P.parse_funnel(request.query_params, scope)
            step = P.parse_int(request.query_params, "step", 1, 1, len(q.steps))
            limit = P.parse_int(request.query_params, "limit", 100, 1, 1000)
        except P.ParamError as exc:
            return JSONResponse({"code": 400, "error": exc.message, "parameter": exc.param}, status_code=400)
        users, total = await asyncio.to_thread(funnel_step_users, engine(), q, step, limit)
        return JSONResponse({"users": users, "step": step, "total": total})

    async def event_types(request: Request, project: str) -> Response:
        return JSONResponse(await asyncio.to_thread(project_vocabulary, settings, meta_store, project))

    return [
        Route("/api/web/charts", authed(list_charts), methods=["GET"]),
        Route("/api/web/charts", authed(create_chart), methods=["POST"]),
        Route("/api/web/charts/{id}", authed(one_chart), methods=["GET", "PUT", "DELETE"]),
        Route("/api/web/dashboards", authed(list_dashboards), methods=["GET"]),
        Route("/api/web/dashboards", authed(create_dashboard), methods=["POST"]),
        Route("/api/web/dashboards/{id}", authed(one_dashboard), methods=["GET", "PUT", "DELETE"]),
        Route("/api/web/funnel-users", authed(funnel_users), methods=["GET"]),
        Route("/api/web/event-types", authed(event_types), methods=["GET"]),
    ]


def project_vocabulary(settings: Settings, meta_store: MetadataStore, project: str) -> dict[str, Any]:
    """Event types (seen + planned) and property names of one project, read as the read-only ClickHouse user."""
    import clickhouse_connect

    t = settings.clickhouse
    client = clickhouse_connect.get_client(
        host=t.host, port=t.port, username=settings.clickhouse_readonly_user,
        password=settings.clickhouse_readonly_password, secure=t.secure, database=t.database,
    )
    try:
        seen = client.query(
            f"SELECT event_type, count() FROM {t.database}.events WHERE project = {{p:String}} AND is_bot = 0 "
            "GROUP BY event_type ORDER BY count() DESC, event_type LIMIT 1000",
            parameters={"p": project},
        ).result_rows
        keys = client.query(
            "SELECT DISTINCT arrayJoin(JSONExtractKeys(event_properties)) AS k FROM "
            f"(SELECT event_properties FROM {t.database}.events WHERE project = {{p:String}} LIMIT 100000) "
            "ORDER BY k LIMIT 500",
            parameters={"p": project},
        ).result_rows
    finally:
        client.close()
    try:
        planned = set(meta_store.plan(project).schemas)
    except MetadataError:
        planned = set()
    counts = {name: int(n) for name, n in seen}
    names = list(counts) + sorted(planned - set(counts))
    return {
        "event_types": [{"name": n, "count": counts.get(n, 0), "planned": n in planned} for n in names],
        "properties": {"event": [k for (k,) in keys], "user": list(BUILTIN_USER_PROPERTIES)},
    }


def funnel_step_users(engine: Any, q: Any, step: int, limit: int) -> tuple[list[str], int]:
    """Actors whose best funnel path reaches ``step``: the API's own funnel paths
    (:func:`query_service.compile.funnel.funnel_paths_sql`), so the list agrees with the bar."""
    from query_service.compile.funnel import compile_funnel_actors

    rows = engine.run(compile_funnel_actors(q, step, limit)).rows
    return [str(r["actor_id"]) for r in rows], int(rows[0]["total"]) if rows else 0
