"""`eventpipe dbt …`: run dbt on dbt_project/ against CLICKHOUSE_URL (the same ClickHouse as everything else)."""

from __future__ import annotations

import os
import subprocess

import typer

from orchestration.dbt.project import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_env, dbt_target_dir


def register(app: typer.Typer) -> None:
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
