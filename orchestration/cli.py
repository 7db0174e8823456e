"""`eventpipe dagster`: the Dagster webserver + daemon (``dagster dev -w workspace.yaml``) for this stack;
`eventpipe backfill`: an asset backfill of event hours through it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from eventpipe_core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"
DAGSTER_YAML = """# Written by `eventpipe dagster` (local sqlite instance). Production: a Postgres-backed instance.
telemetry:
  enabled: false
# One machine: at most two runs at a time (each is a process), and dbt runs one at a time (pool
# dbt_clickhouse) so a whole-table mart is never rebuilt from a half-replaced day by a parallel run.
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    default_limit: 1
"""


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME from settings, created with a minimal dagster.yaml if it has none."""
    home = Path(settings.dagster_home or settings.eventpipe_home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
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
