"""The query service's HTTP layer: routes, auth and response shapes — nothing else.

Auth is Amplitude's: HTTP Basic ``api_key:secret_key`` (``eventpipe keys create`` prints both); the key's
project is the only one its requests can read (the project is never a request parameter). Errors are JSON:
400 ``{"error", "parameter"}`` for a malformed parameter, 401 for missing or wrong credentials.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.projects_settings import get_timezone
from eventpipe_core.metadata.secrets import project_for_credentials
from eventpipe_core.settings import Settings, get_settings
from query_service import params as P
from query_service import params_insights as PI
from query_service.alerts_api import alert_routes
from query_service.cohorts_api import cohort_routes
from query_service.engine import Engine, QueryFailed
from query_service.export_api import export_handler
from query_service.sql_api import sql_route

log = logging.getLogger(__name__)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error(status: int, message: str, parameter: str | None = None, headers: dict[str, str] | None = None) -> JSON:
    body: dict[str, Any] = {"code": status, "error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return JSON(body, status_code=status, headers=headers)


class Auth:
    """api_key:secret_key -> project (verified results kept ``ttl`` seconds, so a request costs no DB round trip)."""

    def __init__(self, store: MetadataStore, ttl: float):
        self.store, self.ttl = store, ttl
        self._cache: dict[tuple[str, str], tuple[float, str | None, str]] = {}

    def lookup(self, api_key: str, secret: str) -> tuple[str, str] | None:
        now = time.monotonic()
        hit = self._cache.get((api_key, secret))
        if hit is not None and now - hit[0] < self.ttl:
            return (hit[1], hit[2]) if hit[1] else None
        project = project_for_credentials(self.store, api_key, secret)
        tz = get_timezone(self.store, project) if project else "UTC"
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(api_key, secret)] = (now, project, tz)
        return (project, tz) if project else None


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user and password else None


Handler = Callable[[Request, P.Scope], Awaitable[Response]]


def create_app(settings: Settings | None = None, engine: Engine | None = None, store: MetadataStore | None = None) -> Starlette:
    settings = settings or get_settings()
    if store is None:
        from eventpipe_core.metadata import get_metadata_store

        store = get_metadata_store(settings)
    engine = engine or Engine.from_settings(settings)
    auth = Auth(store, settings.query_auth_cache_s)

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            creds = _basic(request)
            found = await run_in_threadpool(auth.lookup, *creds) if creds else None
            if found is None:
                return error(401, "Invalid API key or secret key: use HTTP Basic auth with api_key:secret_key",
                             headers={"WWW-Authenticate": 'Basic realm="eventpipe"'})
            project, tz = found
            try:
                scope = P.Scope(project=project, timezone=tz, include_bots=P.parse_bool(request.query_params, "include_bots"),
                                hot_from=engine.hot_from(), lake_path=engine.lake_path)
                return await handler(request, scope)
            except P.ParamError as exc:
                return error(400, exc.message, exc.param)
            except QueryFailed as exc:
                return error(503, f"the query could not be answered now: {exc}")
        return endpoint

    def today_in(tz: str) -> date:
        return datetime.now(ZoneInfo(tz)).date()

    async def run(compiled: Any) -> list[dict[str, Any]]:
        return (await run_in_threadpool(engine.run, compiled)).rows

    async def segmentation(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import segmentation as seg

        q = P.parse_segmentation(request.query_params, scope)
        data = seg.shape(q, await run(seg.compile_segmentation(q)))
        if P.parse_bool(request.query_params, "forecast"):  # issue 16: anomaly band (query_service/forecast_api.py)
            from query_service.forecast_api import add_forecast

            model = request.query_params.get("forecast_model") or settings.anomaly_model
            data = await add_forecast(q, data, run, model)
        return JSON({"data": data})

    async def funnels(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import funnel

        q = P.parse_funnel(request.query_params, scope)
        return JSON({"data": funnel.shape(q, await run(funnel.compile_funnel(q)))})

    async def retention(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import retention as ret

        q = P.parse_retention(request.query_params, scope, today=today_in(scope.timezone))
        return JSON({"data": ret.shape(q, await run(ret.compile_retention(q)))})

    async def users(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import segmentation as seg

        u = P.parse_users(request.query_params, scope)
        q = P.SegmentationQuery(scope=scope, events=(P.EventSpec("_new" if u.metric == "new" else "_active"),),
                                range=u.range, metric="uniques", interval=u.interval, segments=u.segments,
                                group_by=u.group_by, limit=1000)
        data = seg.shape(q, await run(seg.compile_segmentation(q)))
        meta = [lab[1] if isinstance(lab, list) else "All Users" for lab in data["seriesLabels"]]
        return JSON({"data": {"series": data["series"], "seriesMeta": meta, "xValues": data["xValues"]}})

    # Sessions, user look-ups, realtime, lifecycle, stickiness: parsing in params_insights, SQL in compile/*.
    async def sessions_length(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import sessions as S

        q = PI.parse_sessions(request.query_params, scope)
        return JSON({"data": S.shape_length(q, await run(S.compile_length(q)))})

    async def sessions_peruser(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import sessions as S

        q = PI.parse_sessions(request.query_params, scope)
        return JSON({"data": S.shape_peruser(q, await run(S.compile_peruser(q)))})

    async def usersearch(request: Request, scope: P.Scope) -> Response:
        from query_service.users_api import user_search

        return JSON(await user_search(PI.parse_user_lookup(request.query_params, scope, paged=False), run))

    async def useractivity(request: Request, scope: P.Scope) -> Response:
        from query_service.users_api import user_activity

        found = await user_activity(PI.parse_user_lookup(request.query_params, scope, paged=True), run)
        return JSON(found) if found is not None else error(404, "no user matches", "user")

    async def realtime(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import realtime as RT

        q = PI.parse_realtime(request.query_params, scope, datetime.now(ZoneInfo(scope.timezone)))
        return JSON({"data": RT.shape_realtime(q, await run(RT.compile_realtime(q)))})

    async def lifecycle(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import lifecycle as LC

        q = PI.parse_lifecycle(request.query_params, scope)
        return JSON({"data": LC.shape_lifecycle(q, await run(LC.compile_lifecycle(q)))})

    async def stickiness(request: Request, scope: P.Scope) -> Response:
        from query_service.compile import stickiness as ST

        q = PI.parse_stickiness(request.query_params, scope)
        return JSON({"data": ST.shape_stickiness(q, await run(ST.compile_stickiness(q)))})

    async def healthz(_request: Request) -> Response:
        return JSON({"ok": True})

    async def openapi(_request: Request) -> Response:
        from query_service.openapi import spec

        return JSON(spec())

    async def docs(_request: Request) -> Response:
        from query_service.openapi import docs_html

        return HTMLResponse(docs_html())

    routes = [
        Route("/api/2/events/segmentation", guarded(segmentation)),
        Route("/api/2/funnels", guarded(funnels)),
        Route("/api/2/retention", guarded(retention)),
        Route("/api/2/users", guarded(users)),
        Route("/api/2/sessions/length", guarded(sessions_length)),
        Route("/api/2/sessions/peruser", guarded(sessions_peruser)),
        Route("/api/2/usersearch", guarded(usersearch)),
        Route("/api/2/useractivity", guarded(useractivity)),
        Route("/api/2/realtime", guarded(realtime)),
        Route("/api/2/lifecycle", guarded(lifecycle)),
        Route("/api/2/stickiness", guarded(stickiness)),
        Route("/api/2/export", guarded(export_handler(settings))),  # issue 16: raw export (query_service/export_api.py)
        *cohort_routes(store, engine, guarded),  # issue 16: cohorts (query_service/cohorts_api.py)
        *alert_routes(store, guarded),  # issue 16: alerts (query_service/alerts_api.py)
        sql_route(settings, engine, guarded),  # issue 14: POST /api/sql (query_service/sql_api.py)
        Route("/healthz", healthz),
        Route("/openapi.json", openapi),
        Route("/docs", docs),
    ]
    app = Starlette(routes=routes)
    from query_service.web import install_web_ui  # the web UI (issue 15): sign-in cookie, saved charts, web/dist at /

    install_web_ui(app, settings, lambda key, secret: (auth.lookup(key, secret) or (None,))[0], store)
    app.state.engine = engine
    app.state.store = store
    return app
