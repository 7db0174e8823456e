"""`eventpipe` — one command for every component. Sub-commands are registered by each package."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

from eventpipe_core.settings import SettingsError, get_settings

app = typer.Typer(
    help="eventpipe: self-hostable product-analytics pipeline (collector → Kafka → lake → Dagster → ClickHouse → dbt).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def settings_or_exit():
    try:
        return get_settings()
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


@app.command()
def up() -> None:
    """Start the embedded stack in the foreground; Ctrl-C stops everything cleanly."""
    from embedded.broker import PortInUseError
    from embedded.stack import Stack

    settings = settings_or_exit()
    setup_logging()
    stack = Stack(settings)
    console.print(f"[bold]eventpipe up[/bold] — state in {settings.eventpipe_home}, logs in {stack.logs}")
    try:
        try:
            stack.start(echo=console.print)
        except PortInUseError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - report and exit non-zero
            err.print(f"[red]error:[/red] the stack failed to start: {exc}")
            raise typer.Exit(1) from None
        console.print("[green]stack is up[/green] — press Ctrl-C to stop")
        stack.wait(echo=console.print)
    except KeyboardInterrupt:
        pass  # Ctrl-C while starting or running: stop what runs, exit 0
    finally:
        if stack.started:
            console.print("stopping …")
            stack.stop(echo=console.print)
            console.print("[green]stopped cleanly[/green]")


@app.command()
def config() -> None:
    """Print the resolved configuration (passwords masked)."""
    settings = settings_or_exit()
    for name, value in settings.model_dump().items():
        shown = "****" if ("password" in name or "secret" in name) and value else value
        console.print(f"{name.upper():32} {shown}")
    if settings.clickhouse_embedded and settings.chserver_generate_password:
        ch = settings.clickhouse_url
        console.print(
            f"\nchserver users: the writer ({settings.clickhouse.user}) and the service user "
            f"({settings.clickhouse_service_user or 'disabled'}) have generated passwords in "
            f"{settings.chserver_credentials_file} (mode 0600) unless CLICKHOUSE_URL / CLICKHOUSE_SERVICE_PASSWORD set one; "
            f"BI tools: {settings.clickhouse_readonly_user} / CLICKHOUSE_READONLY_PASSWORD ({ch.split('@')[-1]})"
        )


def _register_subcommands() -> None:
    """Each component package contributes its own sub-commands (imported lazily if present)."""
    import importlib

    for module_name in (
        "chserver.cli",
        "collector.cli",
        "ingest_consumer.cli",
        "orchestration.cli",
        "orchestration.dbt.cli",
        "query_service.cli",
        "eventpipe_cli.demo",
        "eventpipe_cli.export",
        "eventpipe_cli.cohorts",
        "eventpipe_cli.alerts",
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # component not present in this build
            raise
        module.register(app)


_register_subcommands()


if __name__ == "__main__":
    app()
