"""`eventpipe dagster`: the Dagster webserver + daemon (``dagster dev -w workspace.yaml``) for this stack;
`eventpipe backfill`: an asset backfill of event hours through it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from eventpipe_core.settings import Settings, sqlalchemy_url

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"
GENERATED_MARK = "# Written by `eventpipe dagster`"


def dagster_yaml(settings: Settings) -> str:
    """The instance config `eventpipe dagster` writes: SQLite under DAGSTER_HOME by default; with
    DAGSTER_POSTGRES_URL, run/event-log/schedule storage in PostgreSQL (dagster-postgres). The URL is
    referenced as an environment variable, so its password never lands in the file (processes started
    without `eventpipe dagster` need it as ``postgresql+psycopg2://…``, see :func:`sqlalchemy_url`). Both use the
    QueuedRunCoordinator: at most DAGSTER_MAX_CONCURRENT_RUNS runs (each a process), and dbt runs one at
    a time (pool dbt_clickhouse) so a whole-table mart is never rebuilt from a half-replaced day. Two runs of one
    partition never run at once (tag ``dagster/partition``, limit 1 per value): the landing sensor may queue a run of
    an hour whose previous run is still going, and that one must swap its hour in last."""
    if settings.dagster_postgres_url:
        storage = (
            "# Production profile: runs, event log and schedules in PostgreSQL (DAGSTER_POSTGRES_URL).\n"
            "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_POSTGRES_URL\n"
        )
        kind = "PostgreSQL instance"
    else:
        storage = ""
        kind = "local SQLite instance; set DAGSTER_POSTGRES_URL for PostgreSQL"
    return (
        f"{GENERATED_MARK} ({kind}); rewritten from the settings on every start\n"
        "# unless this first line is removed.\n"
        "telemetry:\n  enabled: false\n"
        f"{storage}"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
        "concurrency:\n  runs:\n"
        f"    max_concurrent_runs: {settings.dagster_max_concurrent_runs}\n"
        "    tag_concurrency_limits:\n"
        "      # one run per partition at a time: a slower earlier load's REPLACE PARTITION must not hide a later one\n"
        "      - key: dagster/partition\n        value:\n          applyLimitPerUniqueValue: true\n        limit: 1\n"
        "  pools:\n    default_limit: 1\n"
    )


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME from settings with the dagster.yaml of :func:`dagster_yaml`; a dagster.yaml written by
    hand (not starting with the generated mark) is left alone."""
    home = Path(settings.dagster_home or settings.eventpipe_home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text().startswith(GENERATED_MARK):
        config.write_text(dagster_yaml(settings))
    return home


def dagster_dev_command(settings: Settings, host: str = "127.0.0.1") -> list[str]:
    """``dagster dev -w workspace.yaml`` (Dagster 1.13 marks the command itself as superseded by the separate
    ``dg`` CLI, which is not a dependency here; that one notice is filtered)."""
    return [
        sys.executable, "-W", "ignore:Function `dev_command` is superseded:Warning", "-m", "dagster", "dev",
        "-w", str(WORKSPACE), "-h", host, "-p", str(settings.dagster_port),
    ]


def register(app: typer.Typer) -> None:
    @app.command("dagster")
    def dagster(host: str = typer.Option("127.0.0.1", help="interface the Dagster UI listens on")) -> None:
        """Run the Dagster UI + daemon (sensors, schedules, automation) on DAGSTER_PORT with DAGSTER_HOME."""
        from eventpipe_cli.main import settings_or_exit

        settings = settings_or_exit()
        env = dict(os.environ) | {"DAGSTER_HOME": str(prepare_dagster_home(settings))}
        if settings.dagster_postgres_url:  # what dagster.yaml reads, with the installed driver named
            env["DAGSTER_POSTGRES_URL"] = sqlalchemy_url(settings.dagster_postgres_url)
        cmd = dagster_dev_command(settings, host)
        os.chdir(REPO_ROOT)
        # exec: SIGTERM/SIGINT from `eventpipe up` reach `dagster dev` itself, which stops webserver and daemon
        os.execve(cmd[0], cmd, env)

    @app.command("backfill")
    def backfill(
        start: str = typer.Option(..., "--from", help="first hour (2026-01-01-00:00) or day (2026-01-01)"),
        end: str = typer.Option(..., "--to", help="last hour (2026-01-07-23:00) or day (its 23:00 hour), inclusive"),
    ) -> None:
        """Re-enrich and re-load a range of event hours as one Dagster asset backfill (needs `eventpipe up`)."""
        from eventpipe_cli.main import settings_or_exit
        from orchestration.backfill import HOURLY_ASSETS, DagsterUnavailable, hour_keys, launch_asset_backfill

        settings = settings_or_exit()
        try:
            hours = hour_keys(start, end)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        url = f"http://127.0.0.1:{settings.dagster_port}"
        try:
            backfill_id = launch_asset_backfill(url, [list(a) for a in HOURLY_ASSETS], hours, f"hours {hours[0]} .. {hours[-1]}",
                                                {"eventpipe/trigger": "cli-backfill"})
        except DagsterUnavailable as exc:
            typer.echo(f"error: {exc}: start the stack first (`eventpipe up`)", err=True)
            raise typer.Exit(1) from None
        except RuntimeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        per_run = settings.backfill_max_partitions_per_run
        typer.echo(f"backfill {backfill_id}: {len(hours)} hours in {-(-len(hours) // per_run)} run(s) of up to {per_run} "
                   f"hours, in-process — {url}/runs/b/{backfill_id}")
