"""dbt marts in Dagster: ``dbt_definitions(settings)`` is the hook orchestration/definitions.py loads.

Imports of dagster/dagster-dbt stay inside the function: `eventpipe dbt` (orchestration.dbt.cli)
imports this package and must start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

    from eventpipe_core.settings import Settings


def dbt_definitions(settings: Settings) -> dg.Definitions:
    import dagster as dg
    from dagster_dbt import DbtCliResource

    from orchestration.dbt.assets import build_dbt_assets
    from orchestration.dbt.project import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_target_dir, export_dbt_env

    export_dbt_env(settings)
    dbt = DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE)
    dbt_target_dir(settings).mkdir(parents=True, exist_ok=True)
    return dg.Definitions(assets=[build_dbt_assets(settings)], resources={"dbt": dbt})
