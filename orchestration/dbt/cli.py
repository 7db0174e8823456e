"""`eventpipe dbt …`: run dbt on dbt_project/ against CLICKHOUSE_URL (the same ClickHouse as everything else);
`eventpipe funnels …`: the funnel registry (each project's own funnels, read by every marts run)."""

from __future__ import annotations

import os
import subprocess

import typer

from orchestration.dbt.project import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_env, dbt_target_dir

funnels_app = typer.Typer(help="Funnels per project (metadata store), built by the marts runs beside the dbt_project.yml "
                          "defaults.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _registry():  # noqa: ANN202 - FunnelRegistry, imported lazily (fast CLI start)
    from eventpipe_cli.main import settings_or_exit
    from eventpipe_core.metadata import FunnelRegistry, get_metadata_store

    return FunnelRegistry(get_metadata_store(settings_or_exit()))


def _dagster_url() -> str:
    from eventpipe_cli.main import settings_or_exit

    return f"http://127.0.0.1:{settings_or_exit().dagster_port}"


def _backfill(project: str, name: str) -> None:
    """Rebuild fct_funnels for the days already built, through Dagster; else say exactly what to run."""
    from orchestration.backfill import DagsterUnavailable
    from orchestration.dbt.funnel_backfill import built_days, launch_funnels_backfill

    url = _dagster_url()
    try:
        days = built_days(url)
        if not days:
            typer.echo("no day of fct_funnels is built yet: the funnel is in the next marts run of each day")
            return
        backfill = launch_funnels_backfill(url, days, f"funnel {project}/{name}")
    except DagsterUnavailable as exc:
        typer.echo(f"{exc}.\nTo build the funnel for the days already loaded, start the stack (`eventpipe up`) and run:\n"
                   "  eventpipe funnels backfill")
        return
    typer.echo(f"backfill {backfill}: fct_funnels for {len(days)} days ({days[0]} .. {days[-1]}) — "
               f"{url}/runs/b/{backfill}")


@funnels_app.command("create")
def funnels_create(
    project: str = typer.Option(..., "--project", help="the project (as its API keys name it)"),
    name: str = typer.Option(..., "--name", help="funnel name, unique in the project (letters, digits, _ - .)"),
    steps: str = typer.Option(..., "--steps", help="event types in funnel order, comma-separated: a,b,c"),
    window: str = typer.Option("1d", "--window", help="conversion window: 7d, 12h, 30m, 90s, 2w (inclusive)"),
    order: str = typer.Option("this", "--order", help="this | exact | any (README: Funnels)"),
    hold_constant: str | None = typer.Option(None, "--hold-constant", help="event property every step must share"),
    backfill: bool = typer.Option(True, "--backfill/--no-backfill",
                                  help="rebuild fct_funnels for the days already built (through Dagster)"),
) -> None:
    """Create a funnel for one project; it appears in fct_funnels for the days already built (backfill) and after."""
    from eventpipe_core.metadata import FunnelDef, MetadataError, parse_steps, parse_window
    from orchestration.dbt.project import default_funnels

    try:
        if name in {f["name"] for f in default_funnels()}:
            raise MetadataError(f"--name: {name!r} is a default funnel of every project (dbt_project.yml); pick another")
        f = FunnelDef(project, name, parse_steps(steps), parse_window(window), order.strip().lower(), hold_constant)
        _registry().create(f)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"created funnel {project}/{name}: {' -> '.join(f.steps)}, window {f.conversion_window_seconds}s, "
               f"order {f.order}" + (f", holding {hold_constant} constant" if hold_constant else ""))
    if backfill:
        _backfill(project, name)


@funnels_app.command("list")
def funnels_list(project: str | None = typer.Option(None, "--project", help="only this project's funnels")) -> None:
    """List funnels: the defaults (every project) and the registry's."""
    from eventpipe_core.metadata import MetadataError
    from orchestration.dbt.project import default_funnels

    try:
        own = _registry().list(project)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    for f in default_funnels():
        typer.echo(f"(every project)\t{f['name']}\t{','.join(f['steps'])}\t{f.get('conversion_window_seconds', 86400)}s"
                   f"\t{f.get('order', 'this')}\t{f.get('hold_constant') or ''}")
    for f in own:
        typer.echo(f"{f.project}\t{f.name}\t{','.join(f.steps)}\t{f.conversion_window_seconds}s\t{f.order}"
                   f"\t{f.hold_constant or ''}")


@funnels_app.command("delete")
def funnels_delete(
    project: str = typer.Option(..., "--project"), name: str = typer.Option(..., "--name"),
) -> None:
    """Delete a project's funnel: no later marts run builds it (rows already built stay until their day is rebuilt)."""
    from eventpipe_core.metadata import MetadataError

    try:
        deleted = _registry().delete(project, name)
    except MetadataError as exc:
        raise _fail(str(exc)) from None
    if not deleted:
        raise _fail(f"--name: project {project!r} has no funnel named {name!r}", 1)
    typer.echo(f"deleted funnel {project}/{name}")


@funnels_app.command("backfill")
def funnels_backfill() -> None:
    """Rebuild fct_funnels (every funnel) for the days already built, as one Dagster backfill."""
    _backfill("*", "*")


def register(app: typer.Typer) -> None:
    app.add_typer(funnels_app, name="funnels")

    @app.command(
        "dbt",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def dbt(ctx: typer.Context) -> None:
        """Run dbt with the connection from CLICKHOUSE_URL, e.g. `eventpipe dbt build` or `eventpipe dbt docs generate`."""
        from eventpipe_cli.main import settings_or_exit

        settings = settings_or_exit()
        args = list(ctx.args) or ["--help"]
        env = dict(os.environ) | dbt_env(settings)  # the child inherits PATH etc.; the connection comes from settings
        target = ["--target-path", str(dbt_target_dir(settings))] if args[0] not in ("--help", "-h", "--version") else []
        completed = subprocess.run([DBT_EXECUTABLE, *args, *target], cwd=DBT_PROJECT_DIR, env=env)
        raise typer.Exit(completed.returncode)
