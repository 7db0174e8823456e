"""Run the server: lock the data dir, open the engine, serve HTTP until SIGTERM/SIGINT.

uvicorn handles both signals: it stops accepting connections, lets running requests finish, then
the app's lifespan closes the engine (every connection, then the engine, then the lock).
"""

from __future__ import annotations

import logging
from pathlib import Path

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
) -> None:
    """Blocking: serve until a signal asks to stop. Raises DataDirInUseError before binding if the dir is taken."""
    engine = Engine(data_dir, max_concurrent_queries=max_concurrent_queries, databases=databases)
    try:
        app = create_app(engine, users)
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
        log.info("chserver %s on http://%s:%d, data in %s, users %s", engine.version, host, port, data_dir, users.names())
        server.run()
    finally:
        engine.close()  # idempotent; covers startup failures (e.g. the port is taken) before lifespan runs
