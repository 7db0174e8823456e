"""Session fixtures: real services on free ports in temp dirs (never fixed ports or shared dirs).

* ``kafka_broker`` — the embedded Tansu broker (memory storage) with topics created;
* ``s3_server`` — moto's S3 server (real S3 HTTP protocol, in memory) with a bucket;
* ``service_env`` — the environment variables pointing every component at those services;
* ``settings`` — the matching :class:`Settings` object;
* ``chserver`` — the ClickHouse-compatible server (``eventpipe chserver``) on a free port and temp data dir.

Later components add their servers here (ClickHouse-compatible server, collector, …).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedded.broker import EmbeddedBroker, ensure_topics, free_port
from eventpipe_core.settings import Settings, load_settings
from tests.chserver_support import ChServer, start_chserver

AWS_TEST_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_region": "us-east-1"}


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eventpipe-home")


@pytest.fixture(scope="session")
def kafka_broker(session_home: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(host="127.0.0.1", port=free_port(), log_path=session_home / "broker.log")
    broker.start()
    settings = load_settings(eventpipe_home=session_home, kafka_bootstrap_servers=broker.bootstrap)
    ensure_topics(settings, broker.bootstrap)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on a free port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: str) -> str:
    from eventpipe_core.lake_store import s3_client

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3_client(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS)).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def chserver(session_home: Path) -> Iterator[ChServer]:
    """`eventpipe chserver` as a subprocess: ``.url``, ``.host``, ``.port``, ``.clickhouse_url``."""
    # tests build marts in throw-away databases (dbt_…, t_…); readers may read those, never secret_db
    server = start_chserver(
        session_home / "clickhouse", log_path=session_home / "chserver.log",
        extra_env={"CHSERVER_READER_DATABASES": "dbt_*,t_*"},
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_env(session_home: Path, kafka_broker: EmbeddedBroker, s3_server: str, chserver: ChServer) -> dict[str, str]:
    """Environment for child processes (e.g. `eventpipe …` CLIs) talking to the session services."""
    return {
        "EVENTPIPE_HOME": str(session_home),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "CLICKHOUSE_URL": chserver.clickhouse_url,
    }


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    return load_settings(**{k.lower(): v for k, v in service_env.items()})
