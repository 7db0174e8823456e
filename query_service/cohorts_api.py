"""Cohort routes (mounted by ``query_service.app`` behind its auth; the caller's project comes from its scope).

* ``GET /api/cohorts`` — the project's cohorts;
* ``POST /api/cohorts`` — JSON ``{"name", "definition"}`` (behavioral, see :mod:`eventpipe_core.metadata.cohorts`)
  or ``{"name", "user_ids": [...]}`` (static); or a CSV body (``Content-Type: text/csv``, one user id per line,
  an optional ``user_id`` header) with ``?name=``. 201 with the cohort; 400 ``{"error", "parameter"}`` naming
  the bad field. Membership is materialized by the ``cohort_members`` asset (its sensor reacts to the change);
* ``PUT /api/cohorts/{id}`` — a new definition (or user_ids);
* ``GET /api/cohorts/{id}/members?format=json|csv`` — the latest materialized snapshot (``as_of`` + actor ids);
  404 for an unknown id or a cohort of another project.
* ``GET /api/cohorts/{id}/sizes[?start=YYYYMMDD&end=YYYYMMDD]`` — cohort size over time: ``{"id", "sizes":
  [{"as_of", "size"}]}``, one entry per materialized day (the daily ``cohort_members`` partitions), oldest first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.cohorts import CohortError, create_cohort, get_cohort, list_cohorts, update_cohort
from query_service.compile.cohorts import MEMBERS_TABLE, compile_sizes
from query_service.params import ParamError, parse_date

Guard = Callable[[Callable[[Request, Any], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]


def parse_csv_ids(text: str) -> list[str]:
    rows = [r[0].strip() for r in csv.reader(io.StringIO(text)) if r and r[0].strip()]
    return rows[1:] if rows and rows[0].lower() in ("user_id", "actor_id", "id") else rows


async def _body(request: Request) -> tuple[str | None, Any, list[str] | None]:
    if request.headers.get("content-type", "").startswith("text/csv"):
        return request.query_params.get("name"), None, parse_csv_ids((await request.body()).decode("utf-8", "replace"))
    try:
        obj = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ParamError("body", "must be JSON {name, definition} or {name, user_ids}, or a text/csv list") from None
    if not isinstance(obj, dict):
        raise ParamError("body", "must be a JSON object")
    return obj.get("name"), obj.get("definition"), obj.get("user_ids")


def cohort_routes(store: MetadataStore, engine: Any, guarded: Guard) -> list[Route]:
    async def listing(_request: Request, scope: Any) -> Response:
        return JSONResponse({"cohorts": [c.as_dict() for c in await run_in_threadpool(list_cohorts, store, scope.project)]})

    async def create(request: Request, scope: Any) -> Response:
        name, definition, ids = await _body(request)
        try:
            c = await run_in_threadpool(create_cohort, store, scope.project, name, definition, ids)
        except CohortError as exc:
            raise ParamError(exc.field, str(exc)) from None
        return JSONResponse(c.as_dict(), status_code=201)

    async def dispatch(request: Request, scope: Any) -> Response:
        if request.method == "POST":
            return await create(request, scope)
        return await listing(request, scope)

    async def update(request: Request, scope: Any) -> Response:
        cid = request.path_params["cohort_id"]
        _name, definition, ids = await _body(request)
        try:
            c = await run_in_threadpool(update_cohort, store, scope.project, cid, definition=definition, static_members=ids)
        except KeyError:
            return JSONResponse({"code": 404, "error": f"no cohort {cid!r} in this project"}, status_code=404)
        except CohortError as exc:
            raise ParamError(exc.field, str(exc)) from None
        return JSONResponse(c.as_dict())

    async def members(request: Request, scope: Any) -> Response:
        cid = request.path_params["cohort_id"]
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise ParamError("format", "must be json or csv")
        if await run_in_threadpool(get_cohort, store, scope.project, cid) is None:
            return JSONResponse({"code": 404, "error": f"no cohort {cid!r} in this project"}, status_code=404)

        def read() -> tuple[Any, list[str]]:
            own = "project = {p:String} AND cohort_id = {c:String}"
            q = (f"SELECT as_of, actor_id FROM {MEMBERS_TABLE} WHERE {own}"
                 f" AND as_of = (SELECT max(as_of) FROM {MEMBERS_TABLE} WHERE {own})"
                 " GROUP BY as_of, actor_id ORDER BY actor_id")
            rows = engine.client().query(q, parameters={"p": scope.project, "c": cid}).result_rows
            return (rows[0][0] if rows else None), [r[1] for r in rows]

        as_of, ids = await run_in_threadpool(read)
        if fmt == "csv":
            return Response("user_id\n" + "".join(f"{i}\n" for i in ids), media_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="cohort_{cid}.csv"'})
        return JSONResponse({"id": cid, "as_of": as_of.isoformat() if as_of else None, "count": len(ids), "members": ids})

    async def sizes(request: Request, scope: Any) -> Response:
        cid = request.path_params["cohort_id"]
        qp = request.query_params
        start = parse_date("start", qp["start"]) if qp.get("start") else None
        end = parse_date("end", qp["end"]) if qp.get("end") else None
        if start and end and end < start:
            raise ParamError("end", "is before start")
        if await run_in_threadpool(get_cohort, store, scope.project, cid) is None:
            return JSONResponse({"code": 404, "error": f"no cohort {cid!r} in this project"}, status_code=404)
        sql, params = compile_sizes(scope.project, cid, start, end)
        rows = await run_in_threadpool(lambda: engine.client().query(sql, parameters=params).result_rows)
        return JSONResponse({"id": cid, "sizes": [{"as_of": d.isoformat(), "size": int(n)} for d, n in rows]})

    return [
        Route("/api/cohorts", guarded(dispatch), methods=["GET", "POST"]),
        Route("/api/cohorts/{cohort_id}/sizes", guarded(sizes), methods=["GET"]),
        Route("/api/cohorts/{cohort_id}", guarded(update), methods=["PUT"]),
        Route("/api/cohorts/{cohort_id}/members", guarded(members), methods=["GET"]),
    ]
