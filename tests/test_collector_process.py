"""`eventpipe collector` as a real process, started the way `eventpipe up` starts it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from embedded.broker import free_port
from embedded.stack import COMPONENT_FACTORIES, broker_component, collector_component
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings, load_settings
from tests.collector_support import event, read_envelopes


def test_collector_component_serves_and_stops_cleanly(
    service_env: dict[str, str], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert COMPONENT_FACTORIES.index(collector_component) > COMPONENT_FACTORIES.index(broker_component)
    db = f"sqlite:///{tmp_path / 'metadata.db'}"
    port = free_port()
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METADATA_DB_URL", db)
    monkeypatch.setenv("COLLECTOR_PORT", str(port))
    monkeypatch.setenv("COLLECTOR_WORKERS", "2")
    store = MetadataStore(db)
    key = store.create_key("proc")
    store.dispose()

    component = collector_component(load_settings(), tmp_path / "logs")
    assert component is not None and component.port == port
    component.start()  # waits for /healthz
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz", timeout=30).status_code != 200:  # connecting to Kafka
            assert time.monotonic() < deadline, "collector never became ready"
            time.sleep(0.2)
        for i in range(4):  # spread over both workers
            r = httpx.post(f"{base}/2/httpapi", json={"api_key": key, "events": [event(i, event_type="proc")]}, timeout=30)
            assert r.status_code == 200, r.text
        workers = set()  # COLLECTOR_WORKERS=2 really serves from two processes
        for _ in range(300):
            workers.add(httpx.get(f"{base}/healthz", timeout=10).json()["worker"])
            if len(workers) == 2:
                break
        assert len(workers) == 2 and component.stop.__self__.proc.pid not in workers  # type: ignore[attr-defined]
        found = read_envelopes(settings, lambda e: e["project"] == "proc", 4)
        assert sorted(env["event"]["user_id"] for _, env in found) == [f"user-{i:05d}" for i in range(4)]
    finally:
        component.stop()  # SIGTERM, then wait
    proc = component.stop.__self__.proc  # type: ignore[attr-defined]
    assert proc.returncode in (0, -signal.SIGTERM)
    assert not component.alive()
