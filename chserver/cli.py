"""`eventpipe chserver`: the ClickHouse-compatible HTTP server on chDB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``chserver`` command to the ``eventpipe`` CLI."""

    @app.command("chserver")
    def chserver(
        data: Annotated[
            Path | None, typer.Option("--data", help="Data dir (default: CHSERVER_DATA_DIR or $EVENTPIPE_HOME/clickhouse).")
        ] = None,
        host: Annotated[str | None, typer.Option("--host", help="Listen address (default: the host of CLICKHOUSE_URL).")] = None,
        port: Annotated[int | None, typer.Option("--port", help="HTTP port (default: the port of CLICKHOUSE_URL, 8123).")] = None,
        max_concurrent_queries: Annotated[
            int, typer.Option("--max-concurrent-queries", min=1, help="Writer queries run at once; more wait in line.")
        ] = 16,
        restricted_slots: Annotated[
            int, typer.Option("--restricted-slots", min=0, help="Read-only users' queries run at once (own pool; 0 = half).")
        ] = 0,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
    ) -> None:
        """Serve ClickHouse's HTTP interface on chDB, owning the data dir (Ctrl-C / SIGTERM stops cleanly)."""
        from chserver.auth import Users
        from chserver.engine import DataDirInUseError
        from chserver.server import serve
        from embedded.broker import PortInUseError, require_free_port
        from eventpipe_cli.main import err, settings_or_exit, setup_logging

        settings = settings_or_exit()
        setup_logging(verbose)
        target = settings.clickhouse
        data_dir = data or settings.chserver_data_dir
        assert data_dir is not None
        bind_host = host or target.host
        bind_port = port or target.port
        try:
            require_free_port(bind_host, bind_port, "the ClickHouse-compatible server")
            serve(
                data_dir,
                bind_host,
                bind_port,
                Users.from_settings(settings),
                databases=(target.database,),
                max_concurrent_queries=max_concurrent_queries,
                restricted_slots=restricted_slots,
                cors_origins=settings.chserver_cors_origins,
                login_failures_per_minute=settings.chserver_login_failures_per_minute,
                log_level="info" if verbose else "warning",
            )
        except (DataDirInUseError, PortInUseError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
