"""`eventpipe generate` (the load tool) against a real collector process: the steady rate it reports
was accepted, and every event reached Kafka once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from embedded.broker import free_port
from embedded.stack import collector_component
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings, load_settings
from tests.collector_support import read_envelopes


def test_generate_sends_the_requested_rate_through_a_collector(
    service_env: dict[str, str], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = f"sqlite:///{tmp_path / 'metadata.db'}"
    port = free_port()
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METADATA_DB_URL", db)
    monkeypatch.setenv("COLLECTOR_PORT", str(port))
    store = MetadataStore(db)
    key = store.create_key("loadtest")
    store.dispose()
    component = collector_component(load_settings(), tmp_path / "logs")
    assert component is not None
    component.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "collector never became ready"
            time.sleep(0.2)
        out = subprocess.run(
            [sys.executable, "-m", "eventpipe_cli.main", "generate", "--rate", "40", "--duration", "3", "--url", base,
             "--api-key", key, "--users", "7"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ),
        )
        assert out.returncode == 0, out.stdout + out.stderr
        m = re.search(r"sent ([\d,]+) events, accepted ([\d,]+)", out.stdout)
        assert m is not None, out.stdout
        sent, accepted = (int(x.replace(",", "")) for x in m.groups())
        assert sent == accepted == 120  # 40/s for 3 s, on schedule
        found = read_envelopes(settings, lambda e: e["project"] == "loadtest", 120)
        ids = [env["event"]["insert_id"] for _, env in found]
        assert len(ids) == len(set(ids)) == 120
        assert {env["event"]["user_id"] for _, env in found} <= {f"load-user-{i:06d}" for i in range(7)}
    finally:
        component.stop()
