"""Web-UI sign-in: API key + secret key → an HttpOnly, SameSite=Strict session cookie the API accepts.

* ``POST /api/web/session`` ``{"api_key", "secret_key"}`` verifies the pair exactly as the API's Basic auth
  does (the ``verify`` callable the app passes in), stores a session (``web_sessions``, see
  :mod:`eventpipe_core.metadata.charts`) and sets cookie ``ep_session`` (HttpOnly, SameSite=Strict, Path=/,
  Secure when ``WEB_COOKIE_SECURE``). It answers ``{"project", "csrf_token", "expires_at"}``; 401 with
  ``{"error"}`` for a wrong pair, 400 for a malformed body, 415 unless the body is ``application/json`` and
  403 for a foreign ``Origin`` (no login CSRF: a cross-site form can send neither).
* ``GET /api/web/session`` → the same for the current cookie (401 without one); ``DELETE`` signs out
  (row deleted, cookie cleared).
* :class:`SessionAuthMiddleware` turns a valid cookie into the request's ``Authorization: Basic …`` header
  before the API's own auth runs, so every endpoint accepts the cookie beside Basic auth without knowing
  about it; an explicit ``Authorization`` header always wins.

CSRF: a cookie-authenticated request with a state-changing method (anything but GET/HEAD/OPTIONS) must
carry ``X-CSRF-Token`` equal to the session's token (which only same-origin script can read, from the
sign-in or GET answer) and, when the browser sends ``Origin``, an origin equal to the request's own host;
otherwise 403. SameSite=Strict already keeps the cookie off cross-site requests; the token also covers
same-site sibling origins. Basic-auth requests are not subject to it (browsers never attach Basic
credentials the UI did not send).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from datetime import timedelta
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from eventpipe_core.metadata import ChartStore, WebSession
from eventpipe_core.settings import Settings

COOKIE = "ep_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Verify = Callable[[str, str], "str | None"]  # (api_key, secret_key) -> project, None when refused


def _cookie_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is simply no session
                continue
            if COOKIE in jar:
                return jar[COOKIE].value
    return None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def basic_header(api_key: str, secret_key: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{api_key}:{secret_key}".encode())


def parse_basic(value: str | None) -> tuple[str, str] | None:
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if user else None


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class SessionAuthMiddleware:
    """Cookie → Basic credentials for the API under ``/api/`` (see the module docstring for CSRF)."""

    def __init__(self, app: ASGIApp, store: ChartStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        token = _cookie_token(headers)
        if token is None or _header(headers, b"authorization") is not None:
            await self.app(scope, receive, send)
            return
        session = self.store.get_session(token)
        if session is None:
            await self.app(scope, receive, send)  # the API's own auth answers 401
            return
        if scope["method"] not in SAFE_METHODS and (scope["method"], scope["path"]) != ("POST", "/api/web/session"):
            refusal = self._csrf_refusal(headers, session)
            if refusal:
                await _json_error(403, refusal)(scope, receive, send)
                return
        scope = dict(scope)
        scope["headers"] = [*headers, (b"authorization", basic_header(session.api_key, session.secret_key))]
        scope.setdefault("state", {})
        scope["state"] = {**scope["state"], "web_session": session}
        await self.app(scope, receive, send)

    @staticmethod
    def _csrf_refusal(headers: list[tuple[bytes, bytes]], session: WebSession) -> str | None:
        sent = _header(headers, b"x-csrf-token") or ""
        if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            return "missing or wrong X-CSRF-Token header for a cookie-authenticated request"
        origin = _header(headers, b"origin")
        if origin and origin != "null" and urlsplit(origin).netloc != (_header(headers, b"host") or ""):
            return "cross-origin request refused"
        return None


def session_routes(store: ChartStore, settings: Settings, verify: Verify) -> list[Route]:
    ttl = timedelta(hours=settings.web_session_hours)

    def _answer(session: WebSession) -> dict[str, Any]:
        return {"project": session.project, "csrf_token": session.csrf_token, "expires_at": session.expires_at.isoformat()}

    async def sign_in(request: Request) -> Response:
        # Login CSRF: a cross-site page can neither send a JSON body without a CORS preflight nor fake Origin.
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _json_error(415, "sign-in takes a JSON body (Content-Type: application/json)")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            return _json_error(403, "cross-origin request refused")
        try:
            body = await request.json()
        except ValueError:
            return _json_error(400, "body must be a JSON object with api_key and secret_key")
        if not isinstance(body, dict):
            return _json_error(400, "body must be a JSON object with api_key and secret_key")
        for field in ("api_key", "secret_key"):
            if not isinstance(body.get(field), str) or not body[field] or len(body[field]) > 200:
                return _json_error(400, f"{field} must be a non-empty string")
        project = verify(body["api_key"], body["secret_key"])
        if project is None:
            return _json_error(401, "invalid api_key or secret_key")
        token, session = store.create_session(project, body["api_key"], body["secret_key"], ttl)
        response = JSONResponse(_answer(session))
        response.set_cookie(COOKIE, token, max_age=int(ttl.total_seconds()), path="/", httponly=True, samesite="strict",
                            secure=settings.web_cookie_secure)
        return response

    async def current(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        session = store.get_session(token) if token else None
        if session is None or verify(session.api_key, session.secret_key) != session.project:
            return _json_error(401, "not signed in")
        return JSONResponse(_answer(session))

    async def sign_out(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token:
            store.delete_session(token)
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=settings.web_cookie_secure)
        return response

    return [
        Route("/api/web/session", sign_in, methods=["POST"]),
        Route("/api/web/session", current, methods=["GET"]),
        Route("/api/web/session", sign_out, methods=["DELETE"]),
    ]


def request_project(request: Request, verify: Verify) -> str | None:
    """The project of a request authenticated by Basic auth (the cookie has become Basic by now)."""
    creds = parse_basic(request.headers.get("authorization"))
    return verify(*creds) if creds else None
