"""`eventpipe up`'s Dagster component: webserver + daemon start, the code location loads, SIGTERM stops it."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from embedded.broker import free_port
from embedded.stack import dagster_component
from eventpipe_core.settings import load_settings

LOCATIONS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_dagster_component_starts_loads_workspace_and_stops(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    port = free_port()
    for name in ("EVENTPIPE_HOME", "DAGSTER_PORT", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EVENTPIPE_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_PORT", str(port))
    settings = load_settings()
    component = dagster_component(settings, tmp_path / "logs")
    assert component is not None and component.port == port
    component.start()
    try:
        assert component.alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=10) as resp:
            assert "dagster_webserver_version" in json.loads(resp.read())
        entries = graphql(port, LOCATIONS_QUERY)["data"]["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("eventpipe", "LOADED", "RepositoryLocation")], entries
        assert (tmp_path / "dagster" / "dagster.yaml").is_file()  # DAGSTER_HOME from settings
        # the daemon's first sensor tick can come well after the location loads on a busy machine: stopping
        # before it would test nothing, so wait (bounded) for the daemon to have ticked our sensor
        log_path = tmp_path / "logs" / "dagster.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "landing_commits_sensor" not in log_path.read_text():
            time.sleep(1)
    finally:
        component.stop()
    assert not component.alive()
    log = (tmp_path / "logs" / "dagster.log").read_text()
    assert "SensorDaemon" in log and "landing_commits_sensor" in log, log[-2000:]  # the daemon ran our sensor
    assert "Dagster services shut down" in log
    assert "Warning" not in log, log
    assert os.environ.get("DAGSTER_HOME") is None
