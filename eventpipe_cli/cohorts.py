"""`eventpipe cohorts …`: create (definition JSON or a CSV of user ids), list, materialize, export members."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import typer

cohorts_app = typer.Typer(help="Behavioral and static cohorts (definitions in the metadata store).", no_args_is_help=True)


def _store():  # noqa: ANN202
    from eventpipe_cli.main import settings_or_exit
    from eventpipe_core.metadata import get_metadata_store

    return get_metadata_store(settings_or_exit())


def _client():  # noqa: ANN202
    import clickhouse_connect

    from eventpipe_cli.main import settings_or_exit

    t = settings_or_exit().clickhouse
    return clickhouse_connect.get_client(host=t.host, port=t.port, username=t.user, password=t.password, secure=t.secure,
                                         database=t.database, autogenerate_session_id=False), t.database


@cohorts_app.command("create")
def create(
    project: str = typer.Option(..., help="project"),
    name: str = typer.Option(..., help="cohort name (unique in the project)"),
    definition: str | None = typer.Option(None, help="JSON file {match, conditions} (behavioral cohort)"),
    csv_file: str | None = typer.Option(None, "--csv", help="CSV of user ids, one per line (static cohort)"),
) -> None:
    """Create a cohort; prints its id on the last line."""
    from eventpipe_cli.main import console, err
    from eventpipe_core.metadata import MetadataError
    from eventpipe_core.metadata.cohorts import create_cohort
    from query_service.cohorts_api import parse_csv_ids

    if (definition is None) == (csv_file is None):
        err.print("[red]error:[/red] give exactly one of --definition and --csv")
        raise typer.Exit(2)
    try:
        if definition is not None:
            c = create_cohort(_store(), project, name, json.loads(Path(definition).read_text()))
        else:
            c = create_cohort(_store(), project, name, static_members=parse_csv_ids(Path(csv_file).read_text()))  # type: ignore[union-attr]
    except (MetadataError, json.JSONDecodeError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"created {c.kind} cohort {c.name!r}")
    console.print(c.id)


@cohorts_app.command("list")
def listing(project: str = typer.Option(..., help="project")) -> None:
    """The project's cohorts (id, kind, name, definition)."""
    from eventpipe_cli.main import console
    from eventpipe_core.metadata.cohorts import list_cohorts

    for c in list_cohorts(_store(), project):
        console.print(f"{c.id}  {c.kind:10}  {c.name}  {json.dumps(c.definition)}", highlight=False, soft_wrap=True)


@cohorts_app.command("materialize")
def materialize(day: str = typer.Option(datetime.now(UTC).date().isoformat(), help="as-of day (UTC), YYYY-MM-DD")) -> None:
    """Snapshot every cohort as of DAY into cohort_members (what the Dagster asset does for its partition)."""
    from eventpipe_cli.main import console
    from orchestration.cohorts.materialize import materialize_all

    client, database = _client()
    for cid, n in materialize_all(client, database, _store(), date.fromisoformat(day)).items():
        console.print(f"{cid}  {n} members")
    from eventpipe_core import data_versions
    from eventpipe_core.settings import get_settings

    data_versions.bump(get_settings(), "cohort_members", [date.fromisoformat(day)])  # the query cache's versions


@cohorts_app.command("members")
def members(cohort_id: str, project: str = typer.Option(..., help="project"),
            fmt: str = typer.Option("csv", "--format", help="csv or json")) -> None:
    """The latest materialized members of a cohort, on stdout."""
    from eventpipe_cli.main import err
    from eventpipe_core.metadata.cohorts import get_cohort
    from orchestration.cohorts.materialize import read_members

    if get_cohort(_store(), project, cohort_id) is None or fmt not in ("csv", "json"):
        err.print(f"[red]error:[/red] no cohort {cohort_id!r} in project {project!r} (or --format not csv/json)")
        raise typer.Exit(2)
    client, database = _client()
    as_of, ids = read_members(client, database, cohort_id)
    if fmt == "json":
        typer.echo(json.dumps({"id": cohort_id, "as_of": as_of.isoformat() if as_of else None, "members": ids}))
    else:
        typer.echo("user_id")
        for i in ids:
            typer.echo(i)


def register(app: typer.Typer) -> None:
    app.add_typer(cohorts_app, name="cohorts")
