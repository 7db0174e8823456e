"""`eventpipe collector`, `eventpipe keys …`, `eventpipe schemas …`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

keys_app = typer.Typer(help="API keys of projects (unknown or revoked keys get 400 Invalid API key).", no_args_is_help=True)
schemas_app = typer.Typer(
    help="Tracking plan: JSON Schema of event_properties per event type, and the enforcement mode.", no_args_is_help=True
)


def _store():
    from eventpipe_cli.main import settings_or_exit
    from eventpipe_core.metadata import get_metadata_store

    return get_metadata_store(settings_or_exit())


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def collector(
    host: str | None = typer.Option(None, help="Listen address (default COLLECTOR_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (default COLLECTOR_PORT, 8080)."),
    workers: int | None = typer.Option(None, help="Worker processes (default COLLECTOR_WORKERS, 1)."),
) -> None:
    """Serve the Amplitude-compatible ingestion API (HTTP V2, Batch, /track) → Kafka."""
    import uvicorn

    from eventpipe_cli.main import settings_or_exit, setup_logging

    settings = settings_or_exit()
    setup_logging()
    from eventpipe_core.metadata import get_metadata_store

    get_metadata_store(settings).dispose()  # create the tables once, before workers race to
    uvicorn.run(
        "collector.app:create_app", factory=True,
        host=host or settings.collector_host, port=port or settings.collector_port,
        workers=workers or settings.collector_workers,
        proxy_headers=False,  # X-Forwarded-For is handled by the app, from trusted proxies only
        access_log=False, log_level="info",
    )


@keys_app.command("create")
def keys_create(
    project: str = typer.Option(..., "--project", help="Project name (created if new)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"project","api_key","secret_key"} on one line.'),
) -> None:
    """Create an API key and its secret key (for the query API; shown once); the key alone is printed on the last line."""
    from eventpipe_core.metadata import MetadataError
    from eventpipe_core.metadata.secrets import create_key_with_secret

    try:
        key, secret = create_key_with_secret(_store(), project)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps({"project": project, "api_key": key, "secret_key": secret}))
        return
    console.print(f"created an API key for project {project}")
    console.print(f"secret key (query API, shown only now): {secret}", soft_wrap=True)
    print(key)


@keys_app.command("list")
def keys_list(project: str | None = typer.Option(None, "--project", help="Only this project.")) -> None:
    """List keys: key, project, created, revoked."""
    for info in _store().list_keys(project):
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M:%S}" if info.revoked_at else "active"
        print(f"{info.api_key}\t{info.project}\t{info.created_at:%Y-%m-%d %H:%M:%S}\t{state}")


@keys_app.command("revoke")
def keys_revoke(api_key: str = typer.Argument(..., help="The key to revoke.")) -> None:
    """Revoke a key: requests with it get 400 Invalid API key (within COLLECTOR_METADATA_TTL_S)."""
    if not _store().revoke_key(api_key):
        raise _fail(f"no active key {api_key}")
    console.print(f"revoked {api_key}")


@schemas_app.command("set")
def schemas_set(
    event_type: str = typer.Argument(..., help="Event type the schema applies to."),
    schema_file: str = typer.Argument(..., help="JSON Schema file of event_properties ('-' = stdin)."),
    project: str = typer.Option(..., "--project"),
) -> None:
    """Set (replace) the JSON Schema of event_properties for an event type."""
    from eventpipe_core.metadata import MetadataError

    try:
        text = sys.stdin.read() if schema_file == "-" else Path(schema_file).read_text()
        schema = json.loads(text)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read a JSON schema from {schema_file}: {exc}") from None
    try:
        _store().set_schema(project, event_type, schema)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    console.print(f"schema of {event_type!r} set for project {project}")


@schemas_app.command("get")
def schemas_get(event_type: str = typer.Argument(...), project: str = typer.Option(..., "--project")) -> None:
    """Print the JSON Schema of an event type."""
    from eventpipe_core.metadata import MetadataError

    try:
        schema = _store().get_schema(project, event_type)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    if schema is None:
        raise _fail(f"no schema for {event_type!r} in project {project}")
    print(json.dumps(schema, indent=2, sort_keys=True))


@schemas_app.command("list")
def schemas_list(project: str = typer.Option(..., "--project")) -> None:
    """Show the enforcement mode and the event types that have a schema."""
    from eventpipe_core.metadata import MetadataError

    try:
        plan = _store().plan(project)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    print(f"enforcement\t{plan.enforcement}")
    for event_type in plan.schemas:
        print(f"schema\t{event_type}")


@schemas_app.command("delete")
def schemas_delete(event_type: str = typer.Argument(...), project: str = typer.Option(..., "--project")) -> None:
    """Remove the schema of an event type (its events are no longer checked)."""
    from eventpipe_core.metadata import MetadataError

    try:
        found = _store().delete_schema(project, event_type)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    if not found:
        raise _fail(f"no schema for {event_type!r} in project {project}")
    console.print(f"schema of {event_type!r} deleted")


@schemas_app.command("enforce")
def schemas_enforce(
    mode: str = typer.Argument(..., help="off | flag | reject"), project: str = typer.Option(..., "--project"),
) -> None:
    """Set the enforcement mode: off, flag (accept and mark violations) or reject (400)."""
    from eventpipe_core.metadata import MetadataError

    try:
        _store().set_enforcement(project, mode)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    console.print(f"tracking plan of {project}: {mode}")


def register(app: typer.Typer) -> None:
    app.command("collector")(collector)
    app.add_typer(keys_app, name="keys")
    app.add_typer(schemas_app, name="schemas")
