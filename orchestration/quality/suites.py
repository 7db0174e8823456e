"""great-expectations 1.x suites over one enriched hour (or a range of hours), as pandas.

GX is imported lazily: it takes seconds to import, and only check runs need it.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from enrichment.rules import ENRICHED_SCHEMA, plan_violation_count

SUITE_NAME = "enriched_events_hour"
SUITE_COLUMNS = ("insert_id", "event_type", "actor_id", "event_time", "session_id", "kafka_offset", "is_bot",
                 "plan_violations")  # every column _expectations() and plan_violation_count read


def _import_gx() -> Any:
    """``import great_expectations``. GX imports ``pyspark.sql.connect``, whose pyspark 4 import guard
    takes a ``__main__`` without ``__file__``/``__spec__`` for a doctest run and calls ``sys.exit(0)`` —
    and Dagster's multiprocess step workers (``python -c "from multiprocessing.spawn import …"``) have
    exactly such a ``__main__``. ``sys.ps1`` (interactive) passes that guard; it is set only meanwhile."""
    interactive = hasattr(sys, "ps1")
    if not interactive:
        sys.ps1 = ">>> "
    try:
        import great_expectations as gx
    finally:
        if not interactive:
            del sys.ps1
    return gx


@dataclass
class SuiteOutcome:
    success: bool
    rows: int
    failed: dict[str, int] = field(default_factory=dict)  # expectation -> unexpected count
    results: dict[str, bool] = field(default_factory=dict)
    schema_ok: bool = True
    plan_violations: int = 0


def _expectations(start_ms: int, end_ms: int) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="insert_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="event_type"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="actor_id", min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="insert_id"),
        gxe.ExpectColumnValuesToBeBetween(column="_event_time_ms", min_value=start_ms, max_value=end_ms - 1),
        gxe.ExpectColumnValuesToNotBeNull(column="session_id"),
        gxe.ExpectColumnValuesToBeBetween(column="session_id", min_value=0),
        gxe.ExpectColumnValuesToBeOfType(column="session_id", type_="int64"),
        gxe.ExpectColumnValuesToBeOfType(column="kafka_offset", type_="int64"),
        gxe.ExpectColumnValuesToBeInSet(column="is_bot", value_set=[0, 1]),
    ]


def _context():  # noqa: ANN202 - GX EphemeralDataContext
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return context


def validate_enriched(table: pa.Table, start: datetime, end: datetime) -> SuiteOutcome:
    """Run the suite over enriched rows whose partition is [start, end)."""
    gx = _import_gx()

    # Only the columns the expectations read: GX hashes the whole DataFrame (twice) to name the
    # batch, and converting ~55 columns of an hour to pandas dominated the check (50 s for 600k rows).
    df = table.select([c for c in SUITE_COLUMNS if c in table.column_names]).to_pandas()
    df["_event_time_ms"] = (
        pd.to_datetime(df["event_time"], utc=True).astype("datetime64[ms, UTC]").astype("int64")
        if len(df) else pd.Series(dtype="int64")
    )
    outcome = SuiteOutcome(success=True, rows=len(df), schema_ok=table.schema.remove_metadata() == ENRICHED_SCHEMA)
    outcome.plan_violations = plan_violation_count(df["plan_violations"]) if len(df) else 0
    if not len(df):
        outcome.success = outcome.schema_ok
        return outcome
    context = _context()
    batch_def = (
        context.data_sources.add_pandas("enriched").add_dataframe_asset("hour").add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=_expectations(
        int(start.timestamp() * 1000), int(end.timestamp() * 1000))))
    result = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    for r in result.results:
        cfg = r.expectation_config
        name = f"{cfg.type}({cfg.kwargs.get('column', '')})"
        outcome.results[name] = bool(r.success)
        if not r.success:
            outcome.failed[name] = int((r.result or {}).get("unexpected_count") or 0)
    outcome.success = bool(result.success) and outcome.schema_ok
    return outcome
