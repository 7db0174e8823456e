"""The Dagster code location (``workspace.yaml``): ``defs`` built from the process settings.

Loaded by ``dagster dev -w workspace.yaml`` (repo root) and by ``eventpipe up``; how it is
assembled is in :mod:`orchestration.assemble`.
"""

from orchestration.assemble import build_definitions, dbt_definitions

defs = build_definitions()

__all__ = ["build_definitions", "dbt_definitions", "defs"]
