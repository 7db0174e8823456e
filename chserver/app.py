"""The HTTP front: ClickHouse's HTTP interface as Starlette routes.

Everything that costs CPU (decompression, the query, response compression) runs in the engine's
thread pool; the event loop only parses headers, authenticates and answers ``/ping``, so a long
query never delays a health check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from chserver import compression
from chserver.auth import Users
from chserver.engine import Engine, QueryResult
from chserver.errors import NOT_IMPLEMENTED, STD_EXCEPTION, UNSUPPORTED_METHOD, ClickHouseError
from chserver.request import build_query_request

log = logging.getLogger(__name__)

DISPLAY_NAME = "eventpipe-chserver"


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse sends for an output format."""
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return f"text/csv; charset=UTF-8; header={'present' if 'withnames' in f else 'absent'}"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "values", "xml", "template", "raw", "lineasstring")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def _last_values(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.multi_items()}


def merge_form_fields(params: dict[str, str], content_type_header: str, body: bytes) -> tuple[dict[str, str], bytes]:
    """multipart/form-data: ``query`` and ``param_*`` fields join the URL parameters (as in ClickHouse).

    File parts are ClickHouse "external data" (temporary tables shipped with the query), which
    this server does not support: they are refused with NOT_IMPLEMENTED.
    """
    import email.parser
    import email.policy

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type_header.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ClickHouseError(STD_EXCEPTION, "Malformed multipart/form-data body")
    merged = dict(params)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            raise ClickHouseError(NOT_IMPLEMENTED, "External data (multipart file parts) is not supported by this server")
        if not name:
            raise ClickHouseError(STD_EXCEPTION, "multipart/form-data part without a name")
        payload = part.get_payload(decode=True) or b""
        merged[str(name)] = payload.decode("utf-8")
    return merged, b""


def create_app(engine: Engine, users: Users) -> Starlette:
    """The ASGI app serving ``engine``; closing the app (lifespan shutdown) closes the engine."""

    def base_headers(query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": engine.timezone,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
        }

    def error_response(exc: ClickHouseError, query_id: str) -> Response:
        headers = base_headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(exc.code)
        return PlainTextResponse(exc.body(engine.version), status_code=exc.http_status, headers=headers)

    def run(method: str, params: dict[str, str], headers: dict[str, str], body: bytes, user_name: str) -> tuple[
        QueryResult, bytes, str | None
    ]:
        """Worker-thread part: decompress, execute, compress."""
        user = users.get(user_name)
        data = compression.decompress(body, headers.get("content-encoding"))
        req = build_query_request(method, params, data, user)
        result = engine.execute(req)
        payload = result.body
        encoding = None
        if params.get("enable_http_compression", "0") in ("1", "true") and payload:
            encoding = compression.choose(headers.get("accept-encoding"))
            if encoding:
                level = params.get("http_zlib_compression_level")
                payload = compression.compress(payload, encoding, int(level) if level and level.isdigit() else None)
        return result, payload, encoding

    async def query(request: Request) -> Response:
        params = _last_values(request)
        query_id = params.get("query_id") or str(uuid.uuid4())
        if log.isEnabledFor(logging.DEBUG):
            shown = {k: ("****" if k == "password" else v[:200]) for k, v in params.items()}
            encoding = request.headers.get("content-encoding")
            log.debug("%s %s %s content-encoding=%s", request.method, request.url.path, shown, encoding)
        try:
            if request.method not in ("GET", "POST"):
                raise ClickHouseError(UNSUPPORTED_METHOD, f"HTTP method {request.method} is not supported")
            headers = {k.lower(): v for k, v in request.headers.items()}
            user = users.authenticate(headers, params)
            body = await request.body()
            if headers.get("content-type", "").startswith("multipart/form-data"):
                # clickhouse-connect sends the query and long bound parameters as form fields
                params, body = merge_form_fields(params, headers["content-type"], body)
            loop = asyncio.get_running_loop()
            result, payload, encoding = await loop.run_in_executor(
                engine.executor, run, request.method, params, headers, body, user.name
            )
        except ClickHouseError as exc:
            return error_response(exc, query_id)
        except Exception as exc:  # noqa: BLE001 - any failure is a ClickHouse-style error, never a crash
            log.exception("query %s failed unexpectedly", query_id)
            return error_response(ClickHouseError(STD_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id)
        headers_out = base_headers(query_id)
        headers_out["X-ClickHouse-Format"] = result.format
        headers_out["X-ClickHouse-Summary"] = json.dumps(result.summary, separators=(",", ":"))
        if params.get("session_id"):
            headers_out["X-ClickHouse-Session-Id"] = params["session_id"]
        if encoding:
            headers_out["Content-Encoding"] = encoding
        return Response(payload, media_type=content_type(result.format), headers=headers_out)

    async def root(request: Request) -> Response:
        if request.method in ("GET", "HEAD") and "query" not in request.query_params:
            return PlainTextResponse("Ok.\n")
        return await query(request)

    async def ping(request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def not_found(request: Request) -> Response:
        return PlainTextResponse(
            f"There is no handle {request.url.path}\n\nUse / or /ping for health checks.\n"
            "Send queries from your program with POST method or GET /?query=...\n",
            status_code=404,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.close)

    methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET", "HEAD"]),
            Route("/replicas_status", ping, methods=["GET", "HEAD"]),
            Route("/", root, methods=methods),
            Route("/query", query, methods=methods),
            Route("/{path:path}", not_found, methods=methods),
        ],
        lifespan=lifespan,
    )
