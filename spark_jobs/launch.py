"""The Dagster side of the Spark backfill: engine choice, inputs, ``spark-submit`` through Pipes, results.

The ``enriched_events`` asset calls :func:`run_spark_enrichment` when :func:`choose_engine` says so.
The Spark job gets everything as files in a temp dir (spec, initial session carry, the ClickHouse
identity map); the learned identities come back as a file and are written to ClickHouse here, exactly
as the in-process path does after each hour.
"""

import contextlib
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetExecutionContext

from enrichment.lake_io import hour_parts
from eventpipe_core.lake_catalog import hour_key
from eventpipe_core.settings import Settings
from orchestration.clickhouse.load import write_identities
from orchestration.clickhouse.schema import SchemaPlan, quote
from spark_jobs.backfill import IDENTITY_SCHEMA, BackfillSpec, hour_range, write_carry

Engine = Literal["auto", "in_process", "spark"]
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
SHIPPED_PACKAGES = ("eventpipe_core", "enrichment", "spark_jobs")  # what executors import (as --py-files)


class EnrichedEventsConfig(dg.Config):
    """Run config of ``enriched_events``: ``engine: spark`` / ``in_process`` forces one engine;
    ``auto`` uses Spark when the run covers more than ``SPARK_BACKFILL_MIN_HOURS`` hours."""

    engine: Engine = "auto"


def choose_engine(requested: str, hours: int, min_hours: int) -> Literal["in_process", "spark"]:
    """Spark pays ~10 s of JVM start per run: worth it only for long ranges, unless forced."""
    if requested == "spark":
        return "spark"
    if requested == "in_process":
        return "in_process"
    if requested != "auto":
        raise ValueError(f"unknown enrichment engine {requested!r} (auto, in_process, spark)")
    return "spark" if hours > min_hours else "in_process"


def spark_submit_path() -> Path:
    """``spark-submit`` of the pyspark install this process uses (venv bin/, else SPARK_HOME/bin)."""
    beside = Path(sys.executable).parent / "spark-submit"
    if beside.exists():
        return beside
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()) / "bin" / "spark-submit"


def build_pyfiles_zip(dest: Path) -> Path:
    """eventpipe's own packages as one zip for ``--py-files``: executors import the same rules module
    as the asset, whether or not eventpipe is installed on the cluster (its dependencies must be)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in SHIPPED_PACKAGES:
            for path in sorted((REPO_DIR / package).rglob("*.py")):
                if "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(REPO_DIR).as_posix())
    return dest


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def spark_submit_command(settings: Settings, spec_path: Path, work_dir: Path, master: str | None = None,
                         pipes: bool = False) -> list[str]:
    """The full ``spark-submit`` command; local dirs and ivy cache under ``work_dir``, quiet log4j."""
    master = master or settings.spark_master
    conf: dict[str, str] = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.jars.ivy": str(work_dir / "ivy"),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={(PACKAGE_DIR / 'log4j2.properties').as_uri()}",
    }
    if is_local_master(master):
        conf["spark.pyspark.python"] = sys.executable
        conf["spark.pyspark.driver.python"] = sys.executable
    for item in settings.spark_submit_conf.split():
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"SPARK_SUBMIT_CONF: {item!r} is not key=value")
        conf[key] = value
    cmd = [str(spark_submit_path()), "--master", master, "--name", "eventpipe-enrichment-backfill"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    zipped = build_pyfiles_zip(work_dir / "eventpipe.zip")
    return [*cmd, "--py-files", str(zipped), str(PACKAGE_DIR / "main.py"), "--spec", str(spec_path),
            *(["--pipes"] if pipes else [])]


def spark_env(master: str, work_dir: Path) -> dict[str, str]:
    """Environment for spark-submit in local mode: executors run this interpreter, scratch space under
    ``work_dir``, bound to loopback (a cluster's own environment decides these). On a cluster the driver
    still runs here (client mode), so it runs this interpreter too: a pip-installed pyspark's
    ``spark-submit`` finds its SPARK_HOME through it; executors use ``spark.pyspark.python``."""
    if not is_local_master(master):
        return {"PYSPARK_DRIVER_PYTHON": sys.executable}
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_DIRS": str(work_dir / "spark-local"), "SPARK_LOCAL_IP": "127.0.0.1"}


def write_identity_snapshot(client: Any, plan: SchemaPlan, path: Path) -> int:
    """ClickHouse ``identity_map`` -> the earliest (first_seen, user_id) per device, as the job's input file."""
    rows = client.query(
        f"SELECT device_id, argMin(user_id, (first_seen, user_id)), toUnixTimestamp64Milli(min(first_seen)) "
        f"FROM {quote(plan.database)}.identity_map GROUP BY device_id ORDER BY device_id"
    ).result_rows
    cols = list(zip(*rows, strict=True)) if rows else [[], [], []]
    pq.write_table(pa.table([list(c) for c in cols], schema=IDENTITY_SCHEMA), path)
    return len(rows)


def write_spec_files(work_dir: Path, *, settings: Settings, lake_url: str, aws_endpoint_url: str | None, aws_region: str,
                     hours: Sequence[datetime], carry: Mapping[str, tuple[int, int]], session_timeout_minutes: int,
                     bot_max_events_per_minute: int, geoip_db_path: str | None) -> BackfillSpec:
    """The job's inputs in ``work_dir``: spec.json, carry.json (identity.parquet is written by the caller)."""
    start, end = hour_range(hours[0], hours[-1] + timedelta(hours=1))
    write_carry(work_dir / "carry.json", carry)
    spec = BackfillSpec(
        lake_url=lake_url, start=start, end=end, session_timeout_minutes=session_timeout_minutes,
        bot_max_events_per_minute=bot_max_events_per_minute, geoip_db_path=geoip_db_path,
        aws_endpoint_url=aws_endpoint_url, aws_region=aws_region, carry_path=str(work_dir / "carry.json"),
        identity_path=str(work_dir / "identity.parquet"), learned_path=str(work_dir / "learned.parquet"),
        buckets=settings.spark_backfill_buckets,
    )
    (work_dir / "spec.json").write_text(spec.to_json())
    return spec


def run_spark_enrichment(
    context: AssetExecutionContext, pipes_client: dg.PipesSubprocessClient, *, settings: Settings, lake_url: str,
    aws_endpoint_url: str | None, aws_region: str, client: Any, plan: SchemaPlan, hours: Sequence[datetime],
    carry: Mapping[str, tuple[int, int]], session_timeout_minutes: int, bot_max_events_per_minute: int,
    geoip_db_path: str | None,
) -> dg.MaterializeResult:
    """Run the Spark job for ``hours`` through Pipes; per-hour metadata on each partition's materialization."""
    with _work_dir() as work_dir:
        spec = write_spec_files(
            work_dir, settings=settings, lake_url=lake_url, aws_endpoint_url=aws_endpoint_url, aws_region=aws_region,
            hours=hours, carry=carry, session_timeout_minutes=session_timeout_minutes,
            bot_max_events_per_minute=bot_max_events_per_minute, geoip_db_path=geoip_db_path)
        known = write_identity_snapshot(client, plan, work_dir / "identity.parquet")
        cmd = spark_submit_command(settings, work_dir / "spec.json", work_dir, pipes=True)
        context.log.info(f"enrichment engine: spark ({settings.spark_master}), {len(hours)} hours, {known} known identities")
        env = spark_env(settings.spark_master, work_dir)
        invocation = pipes_client.run(command=cmd, context=context, env=env, cwd=str(work_dir))
        reported = {}
        for message in invocation.get_custom_messages():
            if isinstance(message, dict) and "partition_key" in message:
                reported[message["partition_key"]] = message
        expected = [hour_key_of(h) for h in hours]
        missing = [k for k in expected if k not in reported]
        if missing:
            raise RuntimeError(f"the Spark job did not report hours {missing}")
        for key in expected:
            msg = reported[key]
            context.add_asset_metadata(
                {**{k: dg.MetadataValue.int(v) for k, v in sorted(msg["stats"].items())},
                 "lake_key": msg["lake_key"], "engine": "spark"},
                partition_key=key,
            )
        learned = pq.read_table(spec.learned_path).to_pandas()
        written = write_identities(client, plan, learned)
        reported_result = invocation.get_materialize_result()
        return dg.MaterializeResult(
            metadata={**(reported_result.metadata or {}), "identities_written": dg.MetadataValue.int(written)},
            data_version=reported_result.data_version,
        )


def hour_key_of(hour: datetime) -> str:
    return hour_key(*hour_parts(hour))


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="eventpipe-spark-") as tmp:
        yield Path(tmp)
