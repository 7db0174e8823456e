"""Mount the web UI on the query service: the built ``web/`` app at ``/``, sign-in, saved charts.

``install_web_ui(app, settings, verify)`` is the one hook ``query_service/app.py`` calls: it adds
:class:`~query_service.web_auth.SessionAuthMiddleware` (cookie → Basic credentials), the session and
saved-chart routes (before the app's own routes), and a static mount of ``WEB_DIST_DIR`` (default: the
repository's ``web/dist``, built by ``make setup``) as the last route, so ``/api/…`` always wins.
Hashed asset files (``/assets/…``) are served with a year-long immutable cache; ``index.html`` is
``no-cache`` so a rebuilt UI is picked up at the next load.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from eventpipe_core.metadata import ChartStore, MetadataStore, get_metadata_store
from eventpipe_core.settings import Settings
from query_service.saved import saved_routes
from query_service.web_auth import SessionAuthMiddleware, Verify, session_routes

REPO_WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


def web_dist_dir(settings: Settings) -> Path:
    return Path(settings.web_dist_dir) if settings.web_dist_dir else REPO_WEB_DIST


class UIFiles(StaticFiles):
    """StaticFiles with cache headers fit for Vite's content-hashed assets."""

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(full_path, stat_result, scope, status_code)
        if "/assets/" in str(full_path):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response


async def _not_built(request: object) -> Response:
    return PlainTextResponse("the web UI is not built: run `make setup` (npm ci && npm run build in web/)", status_code=404)


def web_routes(settings: Settings, verify: Verify, meta_store: MetadataStore | None = None) -> tuple[ChartStore, list[BaseRoute]]:
    meta_store = meta_store or get_metadata_store(settings)
    meta_store.ensure_schema()
    store = ChartStore(meta_store.engine)
    routes: list[BaseRoute] = [*session_routes(store, settings, verify), *saved_routes(store, meta_store, settings, verify)]
    return store, routes


def static_route(settings: Settings) -> BaseRoute:
    dist = web_dist_dir(settings)
    if (dist / "index.html").is_file():
        return Mount("/", app=UIFiles(directory=dist, html=True), name="web")
    return Route("/", _not_built)


def install_web_ui(app: Starlette, settings: Settings, verify: Verify, meta_store: MetadataStore | None = None) -> None:
    """Add the UI to ``app`` (before it starts serving); ``verify(api_key, secret_key)`` returns the project."""
    store, routes = web_routes(settings, verify, meta_store)
    app.router.routes[:0] = routes
    app.router.routes.append(static_route(settings))
    app.add_middleware(SessionAuthMiddleware, store=store)
