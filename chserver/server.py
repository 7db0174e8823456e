"""Run the server: lock the data dir, open the engine, serve HTTP until SIGTERM/SIGINT.

uvicorn handles both signals: it stops accepting connections, lets running requests finish, then
the app's lifespan closes the engine (every connection, then the engine, then the lock). Our own
handlers only record the signal (uvicorn re-raises it after its graceful shutdown, which would
otherwise turn a clean stop into death-by-signal) so a clean stop exits with status 0.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import uvicorn

from chserver.app import create_app
from chserver.auth import Users
from chserver.engine import Engine

log = logging.getLogger(__name__)


def serve(
    data_dir: Path,
    host: str,
    port: int,
    users: Users,
    databases: tuple[str, ...] = (),
    max_concurrent_queries: int = 16,
    log_level: str = "warning",
    cors_origins: str = "",
    login_failures_per_minute: int = 10,
    restricted_slots: int = 0,
) -> None:
    """Blocking: serve until a signal asks to stop. Raises DataDirInUseError before binding if the dir is taken."""
    received: list[int] = []
    server: uvicorn.Server | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if server is not None:
            server.should_exit = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        engine = Engine(
            data_dir, max_concurrent_queries=max_concurrent_queries, databases=databases, restricted_slots=restricted_slots
        )
        try:
            app = create_app(engine, users, cors_origins=cors_origins, login_failures_per_minute=login_failures_per_minute)
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                workers=1,  # chDB allows one engine per process
                log_level=log_level,
                access_log=False,
                timeout_graceful_shutdown=60,
                lifespan="on",
            )
            server = uvicorn.Server(config)
            server.should_exit = bool(received)  # a signal during engine start-up: stop right away
            log.info("chserver %s on http://%s:%d, data in %s, users %s", engine.version, host, port, data_dir, users.names())
            server.run()
        finally:
            engine.close()  # idempotent; covers start-up failures (e.g. the port is taken) before lifespan runs
        if received:
            log.info("chserver stopped cleanly (signal %s)", signal.Signals(received[0]).name)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
