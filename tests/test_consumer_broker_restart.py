"""Broker loss: the broker goes away mid-stream and comes back (S3-backed Tansu keeps its data,
DESIGN §4); the consumer reconnects on its own and the result is still exactly once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from embedded.broker import EmbeddedBroker, free_port
from eventpipe_core.lake_store import LocalLakeStore, s3_client
from eventpipe_core.settings import Settings, load_settings
from tests.conftest import AWS_TEST_KEYS
from tests.ingest_support import (
    assert_exactly_once,
    consumer_env,
    create_topics,
    end_offsets,
    log_text,
    produce,
    start_consumer,
    stop,
    wait_landed,
)


def test_broker_restart_mid_stream_lands_exactly_once(
    settings: Settings, service_env: dict[str, str], s3_server: str, tmp_path: Path
) -> None:
    bucket = f"broker-{uuid.uuid4().hex[:8]}"
    s3_client(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS)).create_bucket(Bucket=bucket)
    broker = EmbeddedBroker(host="127.0.0.1", port=free_port(), storage_url=f"s3://{bucket}/", s3_endpoint=s3_server,
                            log_path=tmp_path / "broker.log", aws_access_key_id="testing", aws_secret_access_key="testing")
    broker.start()
    own = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
    lake = LocalLakeStore(tmp_path / "lake")
    proc = None
    try:
        topic, dlq = create_topics(own)
        env = consumer_env(service_env | {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}, topic, dlq, lake.url,
                           consumer_flush_records=1000)
        log = tmp_path / "consumer.log"
        good1, bad1 = produce(own, topic, 8000, poison_every=400)
        proc = start_consumer(env, log)
        wait_landed(lake, {p: min(e, 1000) for p, e in end_offsets(good1).items()}, timeout=120, procs=[proc])
        broker.stop()
        time.sleep(4)
        assert proc.poll() is None, "the consumer must survive the broker's absence"
        broker.start()
        good2, bad2 = produce(own, topic, 8000, poison_every=400, start=8000)
        good, bad = good1 | good2, bad1 | bad2
        wait_landed(lake, end_offsets(good | bad), timeout=180, procs=[proc])
    finally:
        if proc is not None:
            assert stop(proc) == 0, log_text(tmp_path / "consumer.log")[-3000:]
        broker.stop()
    assert len(good | bad) == 16_000
    assert_exactly_once(lake, topic, good, bad)
