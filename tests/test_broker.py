"""The embedded broker: topics, produce/consume/commit through a fast-joining group, port refusal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from embedded.broker import EmbeddedBroker, PortInUseError, ensure_topics
from eventpipe_core.kafka_clients import admin_config, consumer_config, producer_config
from eventpipe_core.settings import Settings


def test_topics_created_with_configured_partitions(kafka_broker: EmbeddedBroker, settings: Settings) -> None:
    admin = KafkaAdminClient(**admin_config(settings))
    try:
        meta = {m.get("name") or m.get("topic"): m for m in admin.describe_topics(["events", "events.dlq"])}
    finally:
        admin.close()
    assert len(meta["events"]["partitions"]) == settings.kafka_events_partitions
    assert len(meta["events.dlq"]["partitions"]) == settings.kafka_dlq_partitions
    # idempotent
    assert ensure_topics(settings)["events"] == settings.kafka_events_partitions


def test_produce_consume_commit_with_fast_group_join(kafka_broker: EmbeddedBroker, settings: Settings) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**admin_config(settings))
    from kafka.admin import NewTopic

    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    producer = KafkaProducer(**producer_config(settings))
    for i in range(20):
        producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(topic, **consumer_config(settings, group_id=group))
    t0 = time.monotonic()
    seen: list[bytes] = []
    while len(seen) < 20 and time.monotonic() - t0 < 30:
        for records in consumer.poll(timeout_ms=500).values():
            seen.extend(r.value for r in records)
    joined_in = time.monotonic() - t0
    assert sorted(seen) == sorted(f"v{i}".encode() for i in range(20))
    assert joined_in < 15, f"group join + consume took {joined_in:.1f}s"
    consumer.commit()
    committed = {tp: consumer.committed(tp) for tp in consumer.assignment()}
    consumer.close()
    assert sum(committed.values()) == 20

    # A new member of the same group resumes at the committed offsets: nothing re-delivered.
    again = KafkaConsumer(**consumer_config(settings, group_id=group))
    parts = [TopicPartition(topic, p) for p in (0, 1)]
    assert sum(again.committed(tp) or 0 for tp in parts) == 20
    again.close()


def test_second_broker_on_taken_port_refuses(kafka_broker: EmbeddedBroker) -> None:
    with pytest.raises(PortInUseError, match="already in use"):
        EmbeddedBroker(host=kafka_broker.host, port=kafka_broker.port).start()


def test_up_refuses_taken_port_and_stops_cleanly_on_sigint(kafka_broker: EmbeddedBroker, tmp_path) -> None:
    from tests.stack_support import up_env

    cmd = [sys.executable, "-m", "eventpipe_cli.main", "up"]
    taken = subprocess.run(cmd, env=up_env(tmp_path / "a", KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap),
                           capture_output=True, text=True, timeout=60)
    assert taken.returncode == 1
    assert "already in use" in taken.stderr
    assert not (tmp_path / "a" / "clickhouse").exists(), "nothing started before the port check"

    env = up_env(tmp_path / "b")
    port = int(env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "stack is up" in line or "error" in line:
            break
    assert any(f"kafka://127.0.0.1:{port}" in line for line in lines), lines
    # the broker is really up and has its topics
    admin = KafkaAdminClient(bootstrap_servers=[f"127.0.0.1:{port}"])
    assert {"events", "events.dlq"} <= set(admin.list_topics())
    admin.close()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + out
    assert "stopped cleanly" in out
    from embedded.broker import port_is_free

    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "COLLECTOR_PORT", "DAGSTER_PORT"):
        value = env[name]
        p = int(value.rsplit(":", 1)[1].split("/")[0]) if ":" in value else int(value)
        assert port_is_free("127.0.0.1", p), f"{name} port still taken after Ctrl-C"
