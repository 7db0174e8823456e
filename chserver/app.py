"""The HTTP front: ClickHouse's HTTP interface as Starlette routes.

Everything that costs CPU (decompression, the query, response compression) runs in the engine's
thread pool; the event loop only parses headers, authenticates and answers ``/ping``, so a long
query never delays a health check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from chserver import compression
from chserver.accounts import USERS_FILE, admin_kind
from chserver.auth import Users, credentials
from chserver.engine import Engine, QueryResult, RunningQuery, require_utf8
from chserver.errors import (
    ACCESS_DENIED,
    AUTHENTICATION_FAILED,
    BAD_ARGUMENTS,
    STD_EXCEPTION,
    UNSUPPORTED_METHOD,
    ClickHouseError,
)
from chserver.request import build_query_request
from chserver.stream import exception_block

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
    """The URL parameters (the last value of each); one that is not UTF-8 is refused, never silently
    replaced by U+FFFD (Starlette's decoding) — a query would then run with other bytes than sent."""
    from urllib.parse import unquote_to_bytes

    raw = request.scope.get("query_string", b"")
    if any(b >= 0x80 for b in raw) or b"%" in raw:
        for pair in raw.split(b"&"):
            key, _, value = pair.partition(b"=")
            name = unquote_to_bytes(key.replace(b"+", b" ")).decode("utf-8", errors="replace")
            require_utf8(unquote_to_bytes(value.replace(b"+", b" ")), f"URL parameter {name!r}")
            require_utf8(unquote_to_bytes(key.replace(b"+", b" ")), "A URL parameter name")
    return {k: v for k, v in request.query_params.multi_items()}


def merge_form_fields(
    params: dict[str, str], content_type_header: str, body: bytes
) -> tuple[dict[str, str], bytes, list[tuple[str, bytes]]]:
    """multipart/form-data: ``query`` and ``param_*`` fields join the URL parameters (as in ClickHouse).

    File parts are ClickHouse "external data": each is a temporary table named by its form field,
    shaped by the ``<name>_structure`` (or ``<name>_types``) and ``<name>_format`` parameters —
    returned as (name, data) for :func:`chserver.request.build_query_request`.
    """
    import email.parser
    import email.policy

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type_header.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ClickHouseError(STD_EXCEPTION, "Malformed multipart/form-data body")
    merged = dict(params)
    files: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ClickHouseError(STD_EXCEPTION, "multipart/form-data part without a name")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.append((str(name), payload))
            continue
        merged[str(name)] = require_utf8(payload, f"Form field {name!r}")
    return merged, b"", files


def _level(params: dict[str, str]) -> int | None:
    level = params.get("http_zlib_compression_level")
    return int(level) if level and level.isdigit() else None


_HEADER_SAFE = re.compile(r"^[\x20-\x7e]{0,256}$")


class LoginLimiter:
    """Failed logins per (client address, user): after ``per_minute`` failures in a minute, answer 429 until it passes."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(client, []) if now - t < 60]
        if kept:
            self._failures[client] = kept
        else:
            self._failures.pop(client, None)
        return kept

    def check(self, client: str) -> None:
        recent = self._recent(client, time.monotonic())
        if len(recent) >= self.per_minute:
            exc = ClickHouseError(
                AUTHENTICATION_FAILED,
                f"Too many failed logins from {client}: retry in {int(60 - (time.monotonic() - recent[0])) + 1} s",
            )
            exc.status_override = 429
            raise exc

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures.clear()
        self._failures.setdefault(client, []).append(time.monotonic())


def origin_checker(allowed: str):  # noqa: ANN201 - a small closure
    """Browsers: a page's request carries ``Origin`` (or ``Sec-Fetch-Site: cross-site``); refuse unless allowed.

    A text/plain POST needs no CORS preflight, so without this any web page could run SQL on the
    local server; non-browser clients send no Origin and are unaffected.
    """
    origins = {o.strip().rstrip("/") for o in allowed.split(",") if o.strip()}

    def check(headers: dict[str, str]) -> None:
        origin = headers.get("origin")
        if origin is None and headers.get("sec-fetch-site") not in ("cross-site", "same-site"):
            return
        if "*" in origins or (origin and origin.rstrip("/") in origins):
            return
        raise ClickHouseError(
            ACCESS_DENIED, f"Cross-origin request from {origin or 'a web page'} refused (allow it with CHSERVER_CORS_ORIGINS)"
        )

    def allowed_origin(headers: dict[str, str]) -> str | None:
        origin = headers.get("origin")
        if origin and ("*" in origins or origin.rstrip("/") in origins):
            return origin
        return None

    check.allowed_origin = allowed_origin  # type: ignore[attr-defined]
    return check


def create_app(engine: Engine, users: Users, cors_origins: str = "", login_failures_per_minute: int = 10) -> Starlette:
    """The ASGI app serving ``engine``; closing the app (lifespan shutdown) closes the engine."""
    check_origin = origin_checker(cors_origins)
    accounts = users.attach_store(engine.data_dir / USERS_FILE)
    logins = LoginLimiter(login_failures_per_minute)

    def base_headers(query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": engine.timezone,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
        }

    def error_response(exc: ClickHouseError, query_id: str) -> Response:
        headers = base_headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(exc.code)
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="ClickHouse"'
        return PlainTextResponse(exc.body(engine.version), status_code=exc.http_status, headers=headers)

    def run(
        method: str, params: dict[str, str], headers: dict[str, str], body: bytes, user_name: str, query_id: str,
        files: list[tuple[str, bytes]], running: RunningQuery,
    ) -> tuple[QueryResult, bytes, str | None]:
        """Worker-thread part: decompress, execute, compress (a streamed result is compressed piece by piece)."""
        user = users.get(user_name)
        data = compression.decompress(body, headers.get("content-encoding"))
        req = build_query_request(method, params, data, user, files)
        req.query_id = query_id
        req.running = running
        req.stream = params.get("wait_end_of_query", "0") not in ("1", "true")
        kind = admin_kind(req.raw[:4096].decode("latin-1"))
        if kind is not None and accounts is not None:
            require_utf8(req.raw)
            engine.analyze(req.raw)  # one statement per request, as for every other query
            may_admin = not user.profile.restricted and not user.readonly and req.readonly == 0
            columns, rows = accounts.execute(kind, req.raw.decode(), user.name, may_admin, req.database or "default")
            result = engine.table_result(req, columns, rows)
        else:
            result = engine.execute(req)
        payload = result.body
        encoding = None
        if params.get("enable_http_compression", "0") in ("1", "true") and payload:
            encoding = compression.choose(headers.get("accept-encoding"))
            if encoding and result.stream is None:
                payload = compression.compress(payload, encoding, _level(params))
        return result, payload, encoding

    async def until_disconnected(request: Request) -> None:
        """Returns when the client has gone (after the body was read, the next ASGI message is the disconnect)."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    def streamed(result: QueryResult, payload: bytes, encoding: str | None, params: dict[str, str],
                 headers_out: dict[str, str], pool: object, release: object) -> StreamingResponse:
        """The first part, then block after block from the engine; an error on the way is sent in-band."""
        stream = result.stream
        assert stream is not None
        tag = secrets.token_urlsafe(12)
        headers_out["X-ClickHouse-Exception-Tag"] = tag
        loop = asyncio.get_running_loop()
        finished: list[bool] = []

        def finish() -> None:
            """Once: cancel the query if the stream did not end (client gone, server stopping), free the slot."""
            if finished:
                return
            finished.append(True)
            if not stream.done:
                loop.run_in_executor(pool, stream.close)  # type: ignore[arg-type]
            release()  # type: ignore[operator]

        async def body() -> AsyncIterator[bytes]:
            compressor = compression.Compressor(encoding, _level(params)) if encoding else None
            try:
                piece: bytes | None = payload
                while piece is not None:
                    if piece:
                        yield compressor.compress(piece) if compressor else piece
                    piece = await loop.run_in_executor(pool, stream.fetch)  # type: ignore[arg-type]
            except ClickHouseError as exc:
                log.info("query %s failed after its first block: %s", headers_out["X-ClickHouse-Query-Id"], exc.message)
                block = exception_block(tag, exc.body(engine.version))
                yield compressor.compress(block) if compressor else block
            finally:
                finish()
            if compressor:
                yield compressor.flush()

        class Streamed(StreamingResponse):
            async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]  # noqa: ANN001
                try:
                    await super().__call__(scope, receive, send)
                finally:
                    finish()  # also when the body was never started (the client left before the headers)

        return Streamed(body(), media_type=content_type(result.format), headers=headers_out)

    async def query(request: Request) -> Response:
        try:
            params = _last_values(request)
        except ClickHouseError as exc:
            return error_response(exc, str(uuid.uuid4()))
        query_id = params.get("query_id") or str(uuid.uuid4())
        if not _HEADER_SAFE.match(query_id):
            query_id = str(uuid.uuid4())  # never echo a header value that would break the response
        if log.isEnabledFor(logging.DEBUG):
            shown = {k: ("****" if k == "password" else v[:200]) for k, v in params.items()}
            encoding = request.headers.get("content-encoding")
            log.debug("%s %s %s content-encoding=%s", request.method, request.url.path, shown, encoding)
        try:
            if request.method not in ("GET", "POST"):
                raise ClickHouseError(UNSUPPORTED_METHOD, f"HTTP method {request.method} is not supported")
            headers = {k.lower(): v for k, v in request.headers.items()}
            check_origin(headers)
            for name in ("query_id", "session_id"):
                if name in params and not _HEADER_SAFE.match(params[name]):
                    raise ClickHouseError(BAD_ARGUMENTS, f"Invalid {name}: only printable ASCII characters are allowed")
            # Failures count per (address, user name tried): everything local shares 127.0.0.1, so one
            # misconfigured tool guessing at `reader` must not lock eventpipe's own writer out of its loads.
            address = request.client.host if request.client else ""
            client = f"{address} as {credentials(headers, params)[0] or 'default'}"
            logins.check(client)
            try:
                user = users.authenticate(headers, params)
            except ClickHouseError:
                logins.failed(client)
                raise
            body = await request.body()
            files: list[tuple[str, bytes]] = []
            if headers.get("content-type", "").startswith("multipart/form-data"):
                # clickhouse-connect sends the query and long bound parameters as form fields
                params, body, files = merge_form_fields(params, headers["content-type"], body)
            loop = asyncio.get_running_loop()
            pool = engine.executor_for(user.profile)
            admission = engine.admission(user.name, user.profile)
            admission.__enter__()
            try:
                preview = (params.get("query", "") + "\n" + body[:1000].decode("utf-8", errors="replace"))[:1000]
                running = engine.register(query_id, user.name, preview)
            except BaseException:
                admission.__exit__(None, None, None)
                raise
            try:
                work = loop.run_in_executor(pool, run, request.method, params, headers, body, user.name, query_id, files,
                                            running)
                gone = asyncio.ensure_future(until_disconnected(request))
                await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    # The client disconnected while its query runs: cancel it (ClickHouse's
                    # cancel_http_readonly_queries_on_client_close, for every query here).
                    log.info("client of query %s disconnected: cancelling it", query_id)
                    await loop.run_in_executor(None, engine.kill, query_id)
                gone.cancel()
                result, payload, encoding = await work
            except BaseException:
                engine.unregister(running)  # idempotent: a failure before the engine took the request
                admission.__exit__(None, None, None)
                raise
            if result.stream is None:
                engine.unregister(running)
                admission.__exit__(None, None, None)
        except ClickHouseError as exc:
            return error_response(exc, query_id)
        except Exception as exc:  # noqa: BLE001 - any failure is a ClickHouse-style error, never a crash
            log.exception("query %s failed unexpectedly", query_id)
            return error_response(ClickHouseError(STD_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id)
        headers_out = base_headers(query_id)
        if result.has_result:
            headers_out["X-ClickHouse-Format"] = result.format
        headers_out["X-ClickHouse-Summary"] = json.dumps(result.summary, separators=(",", ":"))
        if params.get("session_id"):
            headers_out["X-ClickHouse-Session-Id"] = params["session_id"]
        if encoding:
            headers_out["Content-Encoding"] = encoding
        headers_out.update(cors_headers(request))
        if result.stream is not None:
            return streamed(result, payload, encoding, params, headers_out, pool, lambda: admission.__exit__(None, None, None))
        return Response(payload, media_type=content_type(result.format), headers=headers_out)

    def cors_headers(request: Request) -> dict[str, str]:
        origin = check_origin.allowed_origin({k.lower(): v for k, v in request.headers.items()})
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Headers": "origin, content-type, authorization, x-clickhouse-user, x-clickhouse-key, "
            "x-clickhouse-format, x-clickhouse-database",
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Max-Age": "86400",
            "Vary": "Origin",
        }

    async def root(request: Request) -> Response:
        if request.method == "OPTIONS":
            cors = cors_headers(request)
            return Response(status_code=204 if cors else 403, headers=cors)
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
