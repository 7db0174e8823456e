"""The code location loads; the resolved asset specs match the stored snapshot exactly.

Update the snapshot deliberately with ``EVENTPIPE_UPDATE_SNAPSHOTS=1 pytest tests/test_orchestration_definitions.py``
and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import dagster as dg

from eventpipe_core.settings import Settings, load_settings
from orchestration.assemble import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "orchestration_asset_specs.json"
ROOT = Path(__file__).resolve().parent.parent

# Every setting the specs depend on, explicit so the developer's environment cannot change the snapshot.
SNAPSHOT_SETTINGS: dict[str, Any] = {
    "clickhouse_url": "http://default:@127.0.0.1:8123/analytics", "clickhouse_ttl_days": 90, "clickhouse_cluster": None,
    "dagster_partitions_start": "2024-01-01", "late_data_lookback_days": 14, "events_freshness_fail_minutes": 120,
    "events_freshness_warn_minutes": 75, "marts_freshness_fail_hours": 26, "marts_freshness_warn_hours": 25,
    "backfill_max_partitions_per_run": 24, "landing_sensor_interval_seconds": 30, "catchup_cron": "30 1 * * *",
}


def snapshot_settings(tmp_path: Path) -> Settings:
    return load_settings(eventpipe_home=tmp_path, **SNAPSHOT_SETTINGS)


def describe_condition(c: dg.AutomationCondition | None, depth: int = 0) -> Any:
    """Our composition of conditions; Dagster's labelled built-ins (e.g. any_deps_updated) are leaves."""
    if c is None:
        return None
    node: dict[str, Any] = {"type": type(c).__name__, "label": c.get_label()}
    children = [describe_condition(child, depth + 1) for child in c.children] if depth < 2 or not c.get_label() else []
    if children:
        node["children"] = children
    for attr in ("lookback_delta", "state"):
        value = getattr(c, attr, None)
        if value is not None:
            node[attr] = str(value)
    return node


def describe(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    assets = {}
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        node = graph.get(spec.key)
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "executable": node.is_executable,
            "partitions": str(spec.partitions_def) if spec.partitions_def else None,
            "deps": {d.asset_key.to_user_string(): repr(d.partition_mapping) for d in spec.deps},
            "automation_condition": describe_condition(spec.automation_condition),
            "freshness_policy": repr(spec.freshness_policy) if spec.freshness_policy else None,
            "backfill_policy": str(node.backfill_policy) if node.backfill_policy else None,
            "code_version": spec.code_version,
            "checks": sorted(
                f"{k.name} blocking={graph.get_check_spec(k).blocking} partitions={graph.get_check_spec(k).partitions_def}"
                for k in graph.asset_check_keys if k.asset_key == spec.key
            ),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
        "sensors": sorted((s.name, str(s.default_status)) for s in defs.sensors or []),
        "schedules": sorted((s.name, s.cron_schedule, str(s.default_status)) for s in defs.schedules or []),
        "resources": sorted(defs.resources or {}),
        # UI backfills and automation run the implicit asset job: in-process, not a process per step
        "asset_job_executor": defs.resolve_implicit_global_asset_job_def().executor_def.name,
        "executors": sorted({j.executor_def.name for j in defs.resolve_all_job_defs()}),
    }


def test_resolved_asset_specs_match_snapshot(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building the definitions emits no warnings
        defs = build_definitions(snapshot_settings(tmp_path), include_dbt=False)
        dg.Definitions.validate_loadable(defs)
    actual = json.dumps(describe(defs), indent=1, sort_keys=True, default=str) + "\n"
    if os.environ.get("EVENTPIPE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(actual)
    assert actual == SNAPSHOT.read_text()


def test_code_location_loads_with_dbt_marts_downstream(tmp_path: Path) -> None:
    """``dagster definitions validate -w workspace.yaml`` in a fresh process (the same load ``dagster dev`` does),
    with the dbt hook; the marts hang off clickhouse_events."""
    env = {**os.environ, "EVENTPIPE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warning_lines = [line for line in proc.stderr.splitlines()
                     if "Warning" in line and "definitions_validate_command` is superseded" not in line]
    assert warning_lines == [], proc.stderr
    from orchestration.assemble import dbt_definitions

    extra = dbt_definitions(snapshot_settings(tmp_path))
    if extra is not None:
        defs = build_definitions(snapshot_settings(tmp_path))
        graph = defs.resolve_asset_graph()
        children = graph.get(dg.AssetKey("clickhouse_events")).child_keys
        assert children, "no dbt model depends on clickhouse_events"
        assert all(graph.get(k).partitions_def == graph.get(next(iter(children))).partitions_def for k in children)
