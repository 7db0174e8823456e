"""Operating the consumer: `eventpipe up` component, Prometheus metrics, status log, SIGTERM flush."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from embedded.broker import free_port
from embedded.stack import consumer_component
from eventpipe_core.lake_catalog import iter_commit_records
from eventpipe_core.lake_store import LocalLakeStore
from eventpipe_core.settings import Settings, load_settings
from tests.ingest_support import assert_exactly_once, consumer_env, create_topics, end_offsets, log_text, produce


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_stack_component_metrics_and_sigterm_flush(
    settings: Settings, service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, dlq = create_topics(settings)
    lake = LocalLakeStore(tmp_path / "lake")
    port = free_port()
    env = consumer_env(service_env, topic, dlq, lake.url, consumer_metrics_port=port, consumer_flush_age_s=600,
                       consumer_flush_records=1_000_000, consumer_log_interval_s=1)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    component = consumer_component(load_settings(), tmp_path / "logs")
    assert component is not None and component.port == port
    component.start()  # returns once /metrics reports the loop running
    try:
        assert _metrics(port)["eventpipe_landing_ready"] == 1.0
        good, bad = produce(settings, topic, 3000, poison_every=300)
        deadline = time.monotonic() + 60
        while _metrics(port).get("eventpipe_landing_records_consumed_total", 0) < 3000:
            assert time.monotonic() < deadline and component.alive()
            time.sleep(0.3)
        time.sleep(1.5)  # one status interval
        m = _metrics(port)
        assert m["eventpipe_landing_assigned_partitions"] == 4
        assert m["eventpipe_landing_open_batches"] == 4  # nothing flushed: thresholds not reached
        assert all(m[f'eventpipe_landing_lag{{partition="{p}"}}'] == 0 for p in range(4))
        assert not list(iter_commit_records(lake))
    finally:
        component.stop()  # SIGTERM: flush, commit, leave
    assert not component.alive()
    records = assert_exactly_once(lake, topic, good, bad)
    assert {r.kafka_partition: r.end_offset for r in records} == end_offsets(good | bad)
    text = log_text(tmp_path / "logs" / "consumer.log")
    assert "records/s, lag per partition" in text and "open batches 4" in text
    assert "signal 15" in text and "consumer closed" in text


def test_consumer_component_is_skipped_without_a_metrics_port(settings: Settings, tmp_path: Path) -> None:
    assert consumer_component(settings.model_copy(update={"consumer_metrics_port": 0}), tmp_path) is None
