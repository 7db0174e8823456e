"""`eventpipe demo --exit` at a small size on the real embedded stack (broker, chserver, collector,
consumer, Dagster webserver + daemon): the report read back from ClickHouse equals the ground truth
recomputed here from the generator — every accepted event exactly once, malformed requests
rejected, poison records dead-lettered, DAU, both funnels per entry day, retention, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.demo_support import check_report, demo_command, run_demo_process
from tests.stack_support import up_env

USERS, DAYS = 40, 2


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_report_equals_ground_truth(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code, text = run_demo_process(demo_command(USERS, DAYS, report_path), up_env(tmp_path / "home"), timeout_s=1400)
    assert code == 0, text[-4000:]
    assert "ground truth check: every figure above equals" in text, text[-3000:]
    check_report(report_path, USERS, DAYS)
