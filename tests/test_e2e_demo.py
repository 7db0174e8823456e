"""`eventpipe demo --exit` at a small size on the real embedded stack (broker, chserver, collector,
consumer, Dagster webserver + daemon): the report read back from ClickHouse equals the ground truth
recomputed here from the generator — every accepted event exactly once, malformed requests
rejected, poison records dead-lettered, DAU, both funnels per entry day, retention, sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from demo.generator import DemoConfig, generate
from demo.report import COMPARED
from demo.truth import expected_figures
from tests.stack_support import up_env

USERS, DAYS = 40, 2


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_report_equals_ground_truth(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    env = up_env(tmp_path / "home")
    cmd = [sys.executable, "-m", "eventpipe_cli.main", "demo", "--exit", "--users", str(USERS), "--days", str(DAYS),
           "--report-json", str(report_path), "--timeout", "900"]
    # own process group: whatever the stack leaves behind is ended with it
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=1400)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "ground truth check: every figure above equals" in text, text[-3000:]
    data = json.loads(report_path.read_text())
    report = data["report"]

    # the ground truth, recomputed here from the same seed and dates (not taken from the demo's JSON)
    last_day = date.fromisoformat(data["config"]["last_day"])
    dataset = generate(DemoConfig(users=USERS, days=DAYS, seed=data["config"]["seed"], last_day=last_day))
    truth = dict(bot_devices=dataset.bot_devices, max_per_minute=100, today=last_day + timedelta(days=1),
                 rejected_requests=len(dataset.malformed), rejected_events=sum(m.events for m in dataset.malformed),
                 dead_lettered=len(dataset.poison))
    expected = expected_figures(dataset.sent, **truth)
    for key in COMPARED:
        assert report[key] == expected[key], key

    ev = report["events"]
    assert ev["in_clickhouse"] == report["unique_insert_ids"] == len(dataset.unique_events)  # exactly once
    assert ev["accepted"] == len(dataset.sent) > ev["in_clickhouse"]  # duplicate sends were accepted, stored once
    assert ev["rejected_requests"] == 6 and ev["rejected_events"] == 9 and ev["dead_lettered"] == 4
    assert ev["bot_events"] > DAYS * 24  # crawlers in every hour + the scripted device
    # the figures are sensitive to what they claim: without the late events they would differ
    assert expected_figures(dataset.events + dataset.resends, **truth)["sessions"] != report["sessions"]
    signup = report["funnels"]["signup_to_purchase"]
    assert sum(c[2] for c in signup.values()) > 0 and set(signup) == {d.isoformat() for d in dataset.config.day_list}
    assert report["retention"][dataset.config.first_day.isoformat()]["returned_on"][1] > 0
    assert set(report["dau"]) == {d.isoformat() for d in dataset.config.day_list}
