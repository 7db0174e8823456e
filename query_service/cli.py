"""`eventpipe query-api` (the analytics API) and `eventpipe projects …` (per-project settings)."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)
projects_app = typer.Typer(help="Projects and their analytics settings (time zone).", no_args_is_help=True)


def query_api(
    host: str | None = typer.Option(None, help="Listen address (default QUERY_API_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (default QUERY_API_PORT, 8090)."),
) -> None:
    """Serve the Amplitude Dashboard REST API-compatible analytics API (/api/2/…) over ClickHouse."""
    import uvicorn

    from eventpipe_cli.main import settings_or_exit, setup_logging
    from eventpipe_core.metadata import get_metadata_store

    settings = settings_or_exit()
    setup_logging()
    get_metadata_store(settings).dispose()
    uvicorn.run("query_service.app:create_app", factory=True, host=host or settings.query_api_host,
                port=port or settings.query_api_port, access_log=False, log_level="info")


@projects_app.command("set-timezone")
def set_timezone(
    project: str = typer.Argument(...), timezone: str = typer.Argument(..., help="IANA name, e.g. Europe/Berlin"),
) -> None:
    """Set the project's time zone: every day/week/month bucket and retention day of the query API uses it."""
    from eventpipe_cli.main import settings_or_exit
    from eventpipe_core.metadata import MetadataError, get_metadata_store
    from eventpipe_core.metadata.projects_settings import set_timezone as _set

    try:
        _set(get_metadata_store(settings_or_exit()), project, timezone)
    except MetadataError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"time zone of {project}: {timezone}")


@projects_app.command("list")
def list_projects() -> None:
    """Projects with their time zone."""
    from eventpipe_cli.main import settings_or_exit
    from eventpipe_core.metadata import get_metadata_store
    from eventpipe_core.metadata.projects_settings import get_timezone

    store = get_metadata_store(settings_or_exit())
    for name in store.list_projects():
        print(f"{name}\t{get_timezone(store, name)}")


def register(app: typer.Typer) -> None:
    app.command("query-api")(query_api)
    app.add_typer(projects_app, name="projects")
