"""Helpers of the collector tests: a real uvicorn server in a thread, a metadata store, Kafka reads."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from kafka import KafkaConsumer, TopicPartition

from collector.app import create_app
from collector.server import uvicorn_options
from embedded.broker import free_port
from eventpipe_core.kafka_clients import consumer_config
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings


@pytest.fixture(scope="session")
def collector_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetadataStore]:
    """A SQLite metadata store shared by the collector tests (each test uses its own project)."""
    path = tmp_path_factory.mktemp("collector-meta") / "metadata.db"
    store = MetadataStore(f"sqlite:///{path}")
    store.ensure_schema()
    yield store
    store.dispose()


def new_project(store: MetadataStore, prefix: str = "p") -> tuple[str, str]:
    """A fresh project and one API key for it."""
    project = f"{prefix}-{uuid.uuid4().hex[:10]}"
    return project, store.create_key(project)


def collector_settings(settings: Settings, **overrides: Any) -> Settings:
    """Session settings with collector knobs changed (fast metadata TTL by default)."""
    return settings.model_copy(update={"collector_metadata_ttl_s": 0.0} | overrides)


class ServerThread:
    """uvicorn serving an ASGI app on a free port in a background thread (real HTTP sockets)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", settings: Settings | None = None) -> None:
        self.host, self.port = host, free_port(host)
        options = uvicorn_options(settings or app.state.collector.settings)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="on", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("collector did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@contextlib.contextmanager
def serve(settings: Settings, store: MetadataStore, **kwargs: Any) -> Iterator[ServerThread]:
    server = ServerThread(create_app(settings, store=store, **kwargs)).start()
    try:
        yield server
    finally:
        server.stop()


def read_envelopes(
    settings: Settings, match: Callable[[dict[str, Any]], bool], expected: int, timeout: float = 20.0,
    bootstrap: str | None = None,
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """(key, envelope) of every record of the events topic that ``match`` accepts, once ``expected``
    of them are there (or the timeout passes); reads all partitions from the beginning, no group."""
    cfg = consumer_config(settings) | {"group_id": None}
    if bootstrap:
        cfg["bootstrap_servers"] = [bootstrap]
    consumer = KafkaConsumer(**cfg)
    try:
        topic = settings.kafka_events_topic
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: list[tuple[bytes | None, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                for r in records:
                    envelope = json.loads(r.value)
                    if match(envelope):
                        found.append((r.key, envelope))
            if len(found) >= expected:
                # one more short poll: more than expected would be a bug the caller should see
                for records in consumer.poll(timeout_ms=300).values():
                    found.extend((r.key, e) for r in records if match(e := json.loads(r.value)))
                break
        return found
    finally:
        consumer.close()


def event(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid event."""
    base = {"user_id": f"user-{i:05d}", "device_id": f"device-{i:05d}", "event_type": "page_view",
            "time": int(time.time() * 1000), "event_properties": {"i": i}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path
