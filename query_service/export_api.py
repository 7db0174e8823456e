"""`GET /api/2/export` — Amplitude's Export API over the enriched lake (rules in :mod:`eventpipe_core.export`).

Mounted by ``query_service.app`` behind its authentication: the route reads the caller's project from
``project_of(request)`` (the app's auth), so this module holds no auth of its own.

Answers: 200 ``application/zip`` streamed; 400 ``{"error", "parameter"}`` for a malformed or too wide
range; 404 when the range holds no event of the project (Amplitude's behaviour); 401 without a project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from eventpipe_core.export import ExportRangeError, iter_export_hours, iter_export_zip, parse_range
from eventpipe_core.lake_store import LakeStore
from eventpipe_core.settings import Settings


def _first_and_rest(it: Iterator) -> tuple[object | None, Iterator]:
    first = next(it, None)
    return first, it


def export_routes(settings: Settings, lake: LakeStore, project_of: Callable[[Request], str | None]) -> list[Route]:
    async def export(request: Request) -> Response:
        project = project_of(request)
        if not project:
            return JSONResponse({"error": "authentication required"}, status_code=401)
        try:
            hours = parse_range(request.query_params.get("start"), request.query_params.get("end"), settings.export_max_hours)
        except ExportRangeError as exc:
            return JSONResponse({"error": str(exc), "parameter": exc.param}, status_code=400)
        # Find the first hour with data before answering, so "nothing" is a 404 and not an empty zip.
        first, rest = await run_in_threadpool(_first_and_rest, iter_export_hours(lake, project, hours))
        if first is None:
            return JSONResponse({"error": "no events in the requested range"}, status_code=404)

        def items():
            yield first
            yield from rest

        name = f"{project}_{request.query_params['start']}_{request.query_params['end']}.zip"
        return StreamingResponse(
            iterate_in_threadpool(iter_export_zip(items(), project)),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return [Route("/api/2/export", export, methods=["GET"])]
