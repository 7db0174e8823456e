"""The production profile, end to end: the demo's whole pipeline with every store on its production engine.

`eventpipe demo --exit` (collector → broker → landing → Dagster hourly assets → ClickHouse → dbt marts →
report) runs with only variables changed from the embedded defaults:

* Dagster's instance in PostgreSQL (``DAGSTER_POSTGRES_URL``: run, event-log and schedule storage;
  QueuedRunCoordinator) and the metadata store in PostgreSQL (``METADATA_DB_URL``), each a fresh database
  on the machine's server, dropped afterwards;
* the lake on S3 (``LAKE_URL=s3://…``) and the broker's storage on S3 (``BROKER_STORAGE_URL=s3://…``),
  moto's server as the endpoint; the broker is the deployment's Kafka, not the stack's (it listens on
  127.0.0.2, which ``eventpipe up`` treats as another host, as it would a real Kafka), so the test restarts
  it in the middle of landing — nothing may be lost;
* the enrichment of the landed ranges on a Spark standalone cluster (a master and two workers started
  from the pyspark distribution, ``SPARK_MASTER=spark://…``) reading and writing the S3 lake through
  eventpipe's lake store (boto3; hadoop-aws's S3A jars cannot be installed from the registries reachable
  here), credentials passed to executors with ``spark.executorEnv``; the late hour runs in-process.

The report must still equal the ground truth recomputed here, figure for figure.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from embedded.broker import EmbeddedBroker, ensure_topics, free_port, port_is_free
from eventpipe_core.lake_store import s3_client
from eventpipe_core.settings import load_settings, sqlalchemy_url
from orchestration.cli import dagster_yaml, prepare_dagster_home
from tests.conftest import AWS_TEST_KEYS
from tests.demo_support import check_report, demo_command, run_demo_process
from tests.production_support import SparkCluster, fresh_postgres_database
from tests.stack_support import up_env

pytestmark = pytest.mark.production_profile

USERS, DAYS = 40, 2
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
BROKER_HOST = "127.0.0.2"  # loopback, but not "this machine" to `eventpipe up`: the stack does not own this broker
SPARK_APP = "eventpipe-enrichment-backfill"


@pytest.fixture(scope="module")
def postgres_urls() -> Iterator[dict[str, str]]:
    with fresh_postgres_database("ep_prod_meta") as meta, fresh_postgres_database("ep_prod_dagster") as dagster:
        yield {"metadata": meta, "dagster": dagster}


@pytest.fixture(scope="module")
def buckets(s3_server: str) -> dict[str, str]:
    s3 = s3_client(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS))
    names = {"lake": f"prod-lake-{uuid.uuid4().hex[:8]}", "broker": f"prod-broker-{uuid.uuid4().hex[:8]}"}
    for name in names.values():
        s3.create_bucket(Bucket=name)
    return names


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    # two cores per worker: two runs' Spark apps (a second landing tick) get executors at once, each spread over
    # both workers (one 1-core executor on each), instead of the second app queueing for the first one's cores
    cluster = SparkCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, worker_cores=2, worker_memory="1g").start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def production_env(tmp_path_factory: pytest.TempPathFactory, s3_server: str, buckets: dict[str, str],
                   postgres_urls: dict[str, str], spark_cluster: SparkCluster) -> dict[str, str]:
    """Every variable of the production profile; the rest (ports, EVENTPIPE_HOME) as for `eventpipe up` in tests."""
    home = tmp_path_factory.mktemp("prod-home")
    py = sys.executable
    spark_conf = {
        "spark.pyspark.python": py, "spark.pyspark.driver.python": py,
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", "spark.driver.memory": "512m",
        "spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "2",
        "spark.local.dir": str(home / "spark-local"),
        **{f"spark.executorEnv.{k}": v for k, v in AWS_ENV.items()}, "spark.executorEnv.AWS_ENDPOINT_URL": s3_server,
    }
    return up_env(
        home,
        KAFKA_BOOTSTRAP_SERVERS=f"{BROKER_HOST}:{free_port(BROKER_HOST)}",
        BROKER_STORAGE_URL=f"s3://{buckets['broker']}/",
        LAKE_URL=f"s3://{buckets['lake']}/lake",
        AWS_ENDPOINT_URL=s3_server,
        **AWS_ENV,
        METADATA_DB_URL=postgres_urls["metadata"],
        DAGSTER_POSTGRES_URL=postgres_urls["dagster"],
        SPARK_MASTER=spark_cluster.master_url,
        SPARK_SUBMIT_CONF=" ".join(f"{k}={v}" for k, v in spark_conf.items()),
        # the landed history (both days, one run) goes to the cluster, the late hour runs in-process
        BACKFILL_MAX_PARTITIONS_PER_RUN=str(24 * DAYS), SPARK_BACKFILL_MIN_HOURS="24",
        SPARK_BACKFILL_BUCKETS="2",
    )


@pytest.fixture(scope="module")
def kafka(production_env: dict[str, str]) -> Iterator[EmbeddedBroker]:
    """The deployment's Kafka: Tansu on S3 storage, started from the same variables (BROKER_STORAGE_URL, AWS_*)."""
    settings = load_settings(**{k.lower(): v for k, v in production_env.items() if k.isupper()})
    home = settings.eventpipe_home
    broker = EmbeddedBroker.from_settings(settings, log_path=home / "kafka.log")
    broker.start()
    ensure_topics(settings, broker.bootstrap)
    yield broker
    broker.stop()


def test_dagster_yaml_follows_settings(tmp_path: Path, postgres_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What `eventpipe dagster` writes: SQLite by default; PostgreSQL storage with the URL read from the
    environment (no password in the file) once DAGSTER_POSTGRES_URL is set; a hand-written file is kept."""
    import dagster as dg

    local = load_settings(eventpipe_home=tmp_path / "a")
    assert "postgres" not in dagster_yaml(local) and "QueuedRunCoordinator" in dagster_yaml(local)
    with fresh_postgres_database("ep_prod_yaml") as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", sqlalchemy_url(url))  # as `eventpipe dagster` passes it
        settings = load_settings(eventpipe_home=tmp_path / "b", dagster_postgres_url=url, dagster_max_concurrent_runs=3)
        home = prepare_dagster_home(settings)
        text = (home / "dagster.yaml").read_text()
        assert url not in text and "env: DAGSTER_POSTGRES_URL" in text
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 3
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prepare_dagster_home(settings)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


@pytest.mark.timeout(1500)
def test_demo_on_production_profile_equals_ground_truth(
    production_env: dict[str, str], kafka: EmbeddedBroker, spark_cluster: SparkCluster, buckets: dict[str, str],
    postgres_urls: dict[str, str], s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    restarts: list[float] = []
    first_pid = kafka.proc.pid if kafka.proc else None

    def on_line(line: str) -> None:
        # the late events are about to be sent: the broker goes away and comes back under the collector and
        # the landing consumer (a restart while the history lands would re-run its Spark range: minutes here)
        if line.startswith("4/5") and not restarts:
            kafka.stop()
            time.sleep(1.0)
            kafka.start()
            restarts.append(time.monotonic())

    report_path = tmp_path / "report.json"
    t0 = time.monotonic()
    code, text = run_demo_process(demo_command(USERS, DAYS, report_path, timeout_s=900), production_env, timeout_s=1400,
                                  on_line=on_line)
    elapsed = time.monotonic() - t0
    assert code == 0, text[-5000:]
    assert restarts and kafka.proc is not None and kafka.proc.pid != first_pid, "the broker was not restarted"
    assert "ground truth check: every figure above equals" in text, text[-3000:]
    check_report(report_path, USERS, DAYS)
    print(f"production-profile demo: {elapsed:.0f} s")

    # the stack stopped everything it started: its ports are free again
    for var in ("COLLECTOR_PORT", "DAGSTER_PORT", "CONSUMER_METRICS_PORT"):
        assert port_is_free("127.0.0.1", int(production_env[var])), var

    # the lake and the broker's log are on S3, nothing on local disk
    s3 = s3_client(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS))
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=buckets["lake"]) for o in
            page.get("Contents", [])]
    assert any(k.startswith("lake/raw/events/event_date=") and k.endswith(".parquet") for k in keys)
    assert sum(k.startswith("lake/enriched/events/event_date=") for k in keys) == 24 * DAYS
    assert s3.list_objects_v2(Bucket=buckets["broker"]).get("KeyCount", 0) > 0
    assert not (Path(production_env["EVENTPIPE_HOME"]) / "lake").exists()

    # the metadata store is PostgreSQL: the demo's API key is there
    with psycopg2.connect(postgres_urls["metadata"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE p.name = 'demo'")
        assert cur.fetchone()[0] == 1

    # Dagster's runs, event log and sensor ticks are in PostgreSQL; the landed ranges were enriched by Spark
    import dagster as dg

    monkeypatch.setenv("DAGSTER_POSTGRES_URL", sqlalchemy_url(postgres_urls["dagster"]))
    dagster_home = Path(production_env["EVENTPIPE_HOME"]) / "dagster"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]
        assert {r.job_name for r in runs} >= {"hourly_events_job"}
        ticks = instance.get_ticks(*_sensor_origin(instance, "landing_commits_sensor"))
        assert any(t.run_ids for t in ticks)
        spark_hours = {
            rec.asset_materialization.partition
            for rec in instance.fetch_materializations(dg.AssetKey("enriched_events"), limit=10_000).records
            if rec.asset_materialization and (m := rec.asset_materialization.metadata.get("engine")) and m.value == "spark"
        }
    assert len(spark_hours) > 24, spark_hours  # at least one landed range of more than SPARK_BACKFILL_MIN_HOURS
    apps = spark_cluster.state()["completedapps"]
    assert any(a["name"] == SPARK_APP and a["state"] == "FINISHED" for a in apps), apps
    assert int(spark_cluster.state()["aliveworkers"]) == 2
    # no Spark driver or executor outlived its run
    assert not spark_cluster.state()["activeapps"]
    assert os.path.isdir(dagster_home)


def _sensor_origin(instance, name: str) -> tuple[str, str]:  # noqa: ANN001 - DagsterInstance
    """(origin id, selector id) of the sensor's state in the instance's schedule storage."""
    states = [s for s in instance.all_instigator_state() if s.name == name]
    assert states, [s.name for s in instance.all_instigator_state()]
    return states[0].instigator_origin_id, states[0].selector_id
