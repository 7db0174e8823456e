"""The web UI's alert action on a saved chart (``web/tests/alerts.spec.ts``) in Debian's chromium against a real
``eventpipe query-api`` process (own process group, stopped after) on the test chserver."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from embedded.broker import free_port
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS
from tests.web_support import WEB, start_query_api


def test_alert_from_a_saved_chart_in_the_browser(chserver: ChServer, tmp_path: Path) -> None:
    if not (WEB / "dist" / "index.html").is_file():
        pytest.fail("web/dist is not built: run `make setup`")
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    db_url = f"sqlite:///{tmp_path / 'metadata.db'}"
    store = MetadataStore(db_url)
    store.ensure_schema()
    key, secret = create_key_with_secret(store, "alertui")
    store.dispose()
    env = dict(os.environ) | {
        "EVENTPIPE_HOME": str(tmp_path), "CLICKHOUSE_URL": chserver.clickhouse_url, "METADATA_DB_URL": db_url,
        "CLICKHOUSE_TTL_DAYS": str(TTL_DAYS), "CLICKHOUSE_SERVICE_PASSWORD": chserver.service_password,
    }
    api = start_query_api(env, free_port(), tmp_path / "query-api.log")
    out = tmp_path / "playwright"
    try:
        run_env = dict(os.environ) | {"EP_BASE_URL": api.url, "EP_API_KEY": key, "EP_SECRET_KEY": secret,
                                      "EP_OUTPUT_DIR": str(out), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CI": "1"}
        proc = subprocess.run(["npx", "--no-install", "playwright", "test", "tests/alerts.spec.ts"], cwd=WEB, env=run_env,
                              capture_output=True, text=True, timeout=300, start_new_session=True)
    finally:
        api.stop()
    print(f"playwright output: {out}\n{proc.stdout[-4000:]}")
    assert proc.returncode == 0, f"{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    assert "alerts.png" in {p.name for p in out.rglob("*.png")}
