"""``spark-submit`` entry point of the enrichment backfill: ``spark-submit … spark_jobs/main.py --spec spec.json``.

Launched by Dagster through Pipes (:mod:`spark_jobs.launch`), it streams its log lines to the Dagster
run, sends one custom message per written hour (the asset turns them into per-partition
materialization metadata) and reports the materialization with the totals. Started by hand (no Pipes
``--pipes``) it prints the same lines. The driver must run where spark-submit runs (client deploy
mode) for Pipes' temp-file channel.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _pipes(enabled: bool) -> Any:
    """The Pipes context when launched by Dagster (``--pipes``; its channel comes in the environment)."""
    if not enabled:
        return None
    from dagster_pipes import open_dagster_pipes

    return open_dagster_pipes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="BackfillSpec JSON file")
    parser.add_argument("--pipes", action="store_true", help="report to Dagster through Pipes")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    from spark_jobs.backfill import BackfillSpec, run_backfill

    spec = BackfillSpec.from_json(Path(args.spec).read_text())
    pipes = _pipes(args.pipes)
    # Pipes' context manager reports an exception to Dagster (and closes the message channel).
    with pipes if pipes is not None else contextlib.nullcontext():
        log: Callable[[str], None] = pipes.log.info if pipes is not None else (lambda m: print(m, flush=True))
        spark = SparkSession.builder.appName("eventpipe-enrichment-backfill").getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        try:
            outcome = run_backfill(spark, spec, log)
        finally:
            spark.stop()
        for h in outcome.hours:
            log(f"enriched {h.partition_key}: {h.stats}")
            if pipes is not None:
                pipes.report_custom_message({"partition_key": h.partition_key, "lake_key": h.lake_key, "stats": h.stats})
        log(f"{len(outcome.hours)} hours, {outcome.totals.get('rows', 0)} rows in {outcome.seconds:.1f}s "
            f"({outcome.buckets} buckets), {outcome.learned.num_rows} learned identities")
        if pipes is not None:
            pipes.report_asset_materialization(metadata={
                **{k: {"raw_value": v, "type": "int"} for k, v in outcome.totals.items()},
                "hours": {"raw_value": len(outcome.hours), "type": "int"},
                "engine": {"raw_value": "spark", "type": "text"},
                "spark_buckets": {"raw_value": outcome.buckets, "type": "int"},
                "spark_job_seconds": {"raw_value": round(outcome.seconds, 3), "type": "float"},
            })
    return 0


if __name__ == "__main__":
    sys.exit(main())
