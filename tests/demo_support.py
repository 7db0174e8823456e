"""Running `eventpipe demo --exit` as a test and checking its report against a ground truth recomputed here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from demo.generator import DemoConfig, generate
from demo.report import COMPARED
from demo.truth import expected_figures


def demo_command(users: int, days: int, report_path: Path, timeout_s: float = 900) -> list[str]:
    return [sys.executable, "-m", "eventpipe_cli.main", "demo", "--exit", "--users", str(users), "--days", str(days),
            "--report-json", str(report_path), "--timeout", str(int(timeout_s))]


def run_demo_process(cmd: list[str], env: dict[str, str], timeout_s: float,
                     on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run the demo in its own process group (whatever the stack leaves behind is ended with it); ``on_line``
    sees each output line as it comes (to act during the run). Returns (exit status, output)."""
    proc = subprocess.Popen(cmd, env=env | {"PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    lines: list[str] = []
    try:
        import threading

        timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                lines.append(line)
                if on_line is not None:
                    on_line(line)
            proc.wait()
        finally:
            timer.cancel()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return proc.returncode, "".join(lines)


def check_report(report_path: Path, users: int, days: int) -> dict[str, Any]:
    """The demo's JSON report equals the ground truth recomputed here from the same seed and dates (not taken
    from the demo's JSON), with the checks that make the comparison meaningful. Returns the report."""
    data = json.loads(report_path.read_text())
    report = data["report"]
    last_day = date.fromisoformat(data["config"]["last_day"])
    dataset = generate(DemoConfig(users=users, days=days, seed=data["config"]["seed"], last_day=last_day))
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
    assert ev["bot_events"] > days * 24  # crawlers in every hour + the scripted device
    # the figures are sensitive to what they claim: without the late events they would differ
    assert expected_figures(dataset.events + dataset.resends, **truth)["sessions"] != report["sessions"]
    signup = report["funnels"]["signup_to_purchase"]
    assert sum(c[2] for c in signup.values()) > 0 and set(signup) == {d.isoformat() for d in dataset.config.day_list}
    assert report["retention"][dataset.config.first_day.isoformat()]["returned_on"][1] > 0
    assert set(report["dau"]) == {d.isoformat() for d in dataset.config.day_list}
    return data
