"""The web UI's test stack: the demo's generated events in chserver, a key, and ``eventpipe query-api`` serving
web/dist — one process group per service, stopped whole.

The demo's events reach ``analytics.events`` the cheapest way that keeps the pipeline's layout: the demo
generator's dataset, with the ground truth's documented rules for what enrichment does (dedupe by insert_id,
bots, identity stitching: ``demo.truth``), loaded hour by hour with the project's loader
(``tests.query_support.load_events`` → ``load_hour``). ``expected_funnel`` is the ground truth's funnel over a
range (each actor's most complete path over all its entries in the range) — the figure the marts are tested to equal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.generator import Dataset
from demo.truth import Funnel, actors, bot_insert_ids, dedupe, funnel_paths

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"


def pipeline_events(data: Dataset, max_per_minute: int = 100) -> list[dict[str, Any]]:
    """The demo's sent events as analytics.events rows would hold them (one per insert_id, actor, is_bot)."""
    events = dedupe(data.sent)
    bots = bot_insert_ids(events, data.bot_devices, max_per_minute)
    actor = actors(events)
    out = []
    for e in events:
        row = {k: v for k, v in e.items() if k not in ("user_id", "device_id") and v is not None}
        row.update(actor_id=actor[e["insert_id"]], is_bot=int(e["insert_id"] in bots),
                   user_id=e.get("user_id") or None, device_id=e.get("device_id"))
        out.append(row)
    return out


def expected_funnel(funnel: Funnel, events: list[dict[str, Any]], start_ms: int, end_ms: int) -> list[int]:
    """Actors reaching step k, counting each actor's best path over entries in [start_ms, end_ms)."""
    by_actor: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for e in events:
        if not e["is_bot"]:
            by_actor[e["actor_id"]].append((e["time"], e["insert_id"], e["event_type"], ""))
    counts = [0] * len(funnel.steps)
    for evs in by_actor.values():
        paths = funnel_paths(funnel, evs)
        levels = [level for level, t0, _ in paths.values() if start_ms <= t0 < end_ms]
        for k in range(max(levels, default=0)):
            counts[k] += 1
    return counts


@dataclass
class QueryApi:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_query_api(env: dict[str, str], port: int, log_path: Path, timeout: float = 60.0) -> QueryApi:
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "eventpipe_cli.main", "query-api", "--port", str(port)],
                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO)
    api = QueryApi(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"query-api exited {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{api.url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return api
        except OSError:
            time.sleep(0.2)
    api.stop()
    raise TimeoutError(f"query-api did not answer within {timeout}s: {log_path.read_text()[-3000:]}")
