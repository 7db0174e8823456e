"""`GET /api/2/export` — Amplitude's Export API over the enriched lake (rules in :mod:`eventpipe_core.export`).

``query_service.app`` mounts :func:`export_handler` behind its authentication (the handler gets the caller's
project in its scope; the project is never a parameter). Answers: 200 ``application/zip`` streamed; 400
``{"code", "error", "parameter"}`` for a malformed or too wide range; 404 when the range holds no event of the
project (Amplitude's behaviour).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from eventpipe_core.export import ExportRangeError, HourBatches, iter_export_hours, iter_export_zip, parse_range
from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import Settings
from query_service.params import ParamError


def _peek(it: Iterator[HourBatches]) -> tuple[HourBatches | None, Iterator[HourBatches]]:
    return next(it, None), it


def export_handler(settings: Settings, lake: LakeStore | None = None) -> Callable[[Request, Any], Awaitable[Response]]:
    """The route handler; ``lake`` defaults to LAKE_URL (opened on first use)."""

    @functools.cache
    def the_lake() -> LakeStore:
        return lake or open_lake(settings)

    async def export(request: Request, scope: Any) -> Response:
        try:
            hours = parse_range(request.query_params.get("start"), request.query_params.get("end"), settings.export_max_hours)
        except ExportRangeError as exc:
            raise ParamError(exc.param, str(exc)) from None
        project = scope.project
        # Find the first hour with data before answering, so "nothing" is a 404 and not an empty zip.
        first, rest = await run_in_threadpool(_peek, iter_export_hours(the_lake(), project, hours))
        if first is None:
            return JSONResponse({"code": 404, "error": "no events in the requested range"}, status_code=404)

        def items() -> Iterator[HourBatches]:
            yield first
            yield from rest

        name = f"{project}_{request.query_params['start']}_{request.query_params['end']}.zip"
        return StreamingResponse(
            iterate_in_threadpool(iter_export_zip(items(), project)),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return export
