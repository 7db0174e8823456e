"""The dbt project (``dbt_project/``) as Dagster and the CLI see it.

dbt's profile reads ``DBT_CH_*`` variables; :func:`dbt_env` derives them from ``CLICKHOUSE_URL``
(and ``CLICKHOUSE_CLUSTER``) so dbt talks to the same ClickHouse as every other component.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from eventpipe_core.settings import Settings

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
# dbt of this installation (the venv's), whatever PATH says.
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")


def dbt_env(settings: Settings) -> dict[str, str]:
    """Environment for a dbt process: connection from CLICKHOUSE_URL, no anonymous usage stats."""
    ch = settings.clickhouse
    return {
        "DBT_CH_HOST": ch.host,
        "DBT_CH_PORT": str(ch.port),
        "DBT_CH_USER": ch.user,
        "DBT_CH_PASSWORD": ch.password,
        "DBT_CH_DATABASE": ch.database,
        "DBT_CH_SECURE": "True" if ch.secure else "False",
        "DBT_CH_CLUSTER": settings.clickhouse_cluster or "",
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def export_dbt_env(settings: Settings) -> None:
    """dagster-dbt runs dbt with this process's environment: put the derived connection there."""
    os.environ.update(dbt_env(settings))


def dbt_target_dir(settings: Settings) -> Path:
    return settings.eventpipe_home / "dbt" / "target"


@functools.cache
def dbt_project(target_dir: Path):  # noqa: ANN201 - dagster_dbt.DbtProject
    """The DbtProject, with its manifest prepared (``dbt parse``) when missing or older than the models."""
    from dagster_dbt import DbtProject

    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=target_dir)
    manifest = project.manifest_path
    newest_source = max(p.stat().st_mtime for p in DBT_PROJECT_DIR.rglob("*") if p.suffix in (".sql", ".yml"))
    if not manifest.exists() or manifest.stat().st_mtime < newest_source:
        subprocess.run(
            [DBT_EXECUTABLE, "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target_dir)],
            check=True, cwd=DBT_PROJECT_DIR,
        )
    return project


def default_funnels() -> list[dict]:
    """The funnels dbt_project.yml declares for every project (var ``funnels``)."""
    import yaml

    config = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    return list((config.get("vars") or {}).get("funnels") or [])
