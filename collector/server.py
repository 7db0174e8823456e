"""How the collector is served: uvicorn with a header-read timeout (slowloris).

uvicorn closes idle keep-alive connections, but a client that opens a connection and trickles its
request line and headers a byte at a time keeps it open forever (each byte cancels the keep-alive
timer). :class:`GuardedHttpToolsProtocol` gives every request ``COLLECTOR_HEADER_TIMEOUT_S`` from
the connection's start (or the previous response's end) until its headers are complete, then
closes the connection. The body has its own deadline in the app (``COLLECTOR_BODY_TIMEOUT_S`` →
408), so a slow body cannot hold a connection either.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from eventpipe_core.settings import Settings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline for each request's line and headers."""

    def __init__(self, *args: Any, header_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` every way of serving the collector uses."""
    return {
        "http": functools.partial(GuardedHttpToolsProtocol, header_timeout_s=settings.collector_header_timeout_s),
        "proxy_headers": False,  # X-Forwarded-For is handled by the app, from trusted proxies only
        "access_log": False,
        "timeout_keep_alive": 5,
    }
