"""A quiet product on the real embedded stack (`eventpipe up`: broker, chserver, collector, consumer, Dagster webserver +
daemon): events in at most 3 hours a day over 5 past days (one of them with no event at all), identity stitching and a
duplicate insert_id, then a late event for the oldest day. Every day's marts must appear with no manual step and equal
the answers computed by hand below (funnels in this and any order, DAU, retention Return On / On or After, sessions);
a funnel created with `eventpipe funnels create` on the running stack appears for the days already loaded; and after
`eventpipe up` is stopped (with a CPU hog beside it), no process it started is alive and every port it used is free.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from demo.report import figures
from demo.truth import Funnel, actors, dedupe, expected_figures
from embedded.broker import port_is_free
from eventpipe_core.settings import Settings, load_settings
from tests.stack_support import up_env

PROJECT = "quiet"
TODAY = datetime.now(UTC).date()
D1, D2, D3, D4, D5 = (TODAY - timedelta(days=n) for n in (5, 4, 3, 2, 1))  # D3: no event at all
ANY_FUNNEL = Funnel("any_signup", ("sign_up", "activate", "purchase"), 7 * 86_400)
MARK = "EVENTPIPE_TEST_MARK"


def at(day: date, hh: int, mm: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC).timestamp() * 1000)


def ev(iid: str, etype: str, t: int, session: int, *, user: str | None, device: str) -> dict[str, Any]:
    e: dict[str, Any] = {"insert_id": iid, "event_type": etype, "time": t, "session_id": session, "device_id": device,
                         "platform": "Web"}
    if user:
        e["user_id"] = user
    return e


def main_events() -> list[dict[str, Any]]:
    s = at
    return [
        # D1 (hours 09, 10, 14): alice does the whole funnel; her activate is sent twice (same insert_id)
        ev("a1", "sign_up", s(D1, 9), s(D1, 9), user="alice", device="dev-alice"),
        ev("a2", "activate", s(D1, 9, 10), s(D1, 9), user="alice", device="dev-alice"),
        ev("a2", "activate", s(D1, 9, 10), s(D1, 9), user="alice", device="dev-alice"),
        ev("a3", "purchase", s(D1, 14), s(D1, 14), user="alice", device="dev-alice"),
        # bob: anonymous page view, then signs up on the same device in the same hour (stitched to bob)
        ev("b1", "page_view", s(D1, 10), s(D1, 10), user=None, device="dev-bob-1"),
        ev("b2", "sign_up", s(D1, 10, 5), s(D1, 10), user="bobby", device="dev-bob-1"),
        # carol only purchases (a later step): she never enters a funnel
        ev("c1", "purchase", s(D1, 10, 30), s(D1, 10, 30), user="carol", device="dev-carol"),
        # dave: steps 1 and 3, never 2 (this order: level 1; any order: level 2)
        ev("d1", "sign_up", s(D1, 14, 10), s(D1, 14, 10), user="david", device="dev-dave"),
        ev("d2", "purchase", s(D1, 14, 20), s(D1, 14, 10), user="david", device="dev-dave"),
        # D2 (hours 08, 20)
        ev("a4", "page_view", s(D2, 8), s(D2, 8), user="alice", device="dev-alice"),
        ev("b3", "activate", s(D2, 20), s(D2, 20), user="bobby", device="dev-bob-1"),
        ev("e1", "sign_up", s(D2, 20, 30), s(D2, 20, 30), user="evelyn", device="dev-eve"),
        ev("e2", "purchase", s(D2, 20, 40), s(D2, 20, 30), user="evelyn", device="dev-eve"),
        ev("e3", "activate", s(D2, 20, 50), s(D2, 20, 30), user="evelyn", device="dev-eve"),
        # D4 (hour 12)
        ev("a5", "page_view", s(D4, 12), s(D4, 12), user="alice", device="dev-alice"),
        ev("d3", "page_view", s(D4, 12, 30), s(D4, 12, 30), user="david", device="dev-dave"),
        # D5 (hours 07, 23): bob completes within the 7-day window; an anonymous device browses
        ev("b4", "purchase", s(D5, 7), s(D5, 7), user="bobby", device="dev-bob-1"),
        ev("f1", "page_view", s(D5, 23), s(D5, 23), user=None, device="dev-frank-1"),
        ev("f2", "page_view", s(D5, 23, 10), s(D5, 23), user=None, device="dev-frank-1"),
    ]


LATE = [ev("g1", "sign_up", at(D1, 22), at(D1, 22), user="ginny", device="dev-gina")]  # a new hour of the oldest day


def hand_computed(late: bool) -> dict[str, Any]:
    """The answers, worked out by hand from the events above (see the comments there)."""
    d = {k: v.isoformat() for k, v in {"d1": D1, "d2": D2, "d4": D4, "d5": D5}.items()}
    g = 1 if late else 0  # gina: one more D1 user, entry, cohort member and bounce session
    return {
        "events_in_clickhouse": 18 + g,
        "dau": {d["d1"]: 4 + g, d["d2"]: 3, d["d4"]: 2, d["d5"]: 2},
        "funnels": {
            # this order, 7 days: alice 3, bob 3 (activate D2, purchase D5), dave 1 (purchase before activate; none)
            "signup_to_purchase": {d["d1"]: [3 + g, 2, 2], d["d2"]: [1, 1, 0]},  # eve: purchase before activate
            # any order: dave 2 (steps 1 and 3), eve 3
            ANY_FUNNEL.name: {d["d1"]: [3 + g, 3, 2], d["d2"]: [1, 1, 1]},
        },
        "retention": {
            # D1 cohort: alice {0,1,3}, bob {0,1,4}, carol {0}, dave {0,3} (+ gina {0}); days 0..4 are complete
            d["d1"]: {"cohort_users": 4 + g, "returned_on": [4 + g, 2, 0, 2, 1], "returned_on_or_after": [4 + g, 3, 3, 3, 1]},
            d["d2"]: {"cohort_users": 1, "returned_on": [1, 0, 0, 0], "returned_on_or_after": [1, 0, 0, 0]},  # eve
            d["d5"]: {"cohort_users": 1, "returned_on": [1], "returned_on_or_after": [1]},  # dev-frank-1
        },
        "sessions": {
            # alice 09:00 (2 events, 600 s) + 14:00 (bounce), bob 10:00 (b1 stitched + b2, 300 s), carol (bounce),
            # dave 14:10 (2 events, 600 s) (+ gina, bounce)
            d["d1"]: {"sessions": 5 + g, "events": 8 + g, "bounces": 2 + g, "duration_ms": 1_500_000},
            d["d2"]: {"sessions": 3, "events": 5, "bounces": 2, "duration_ms": 1_200_000},  # eve 3 events, 1200 s
            d["d4"]: {"sessions": 2, "events": 2, "bounces": 2, "duration_ms": 0},
            d["d5"]: {"sessions": 2, "events": 3, "bounces": 1, "duration_ms": 600_000},
        },
    }


def any_order_reference(funnel: Funnel, sent: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The any-order rule (README "Funnels") in plain Python: entry = a step-1 event; level = 1 + distinct other steps
    after it within the window; per actor and entry day the highest level, earliest entry on ties."""
    events = dedupe(sent)
    actor = actors(events)
    by_actor: dict[str, list[tuple[int, str, str]]] = {}
    for e in events:
        by_actor.setdefault(actor[e["insert_id"]], []).append((e["time"], e["insert_id"], e["event_type"]))
    out: dict[str, list[int]] = {}
    for evs in by_actor.values():
        evs.sort()
        best: dict[str, int] = {}
        for i, (t0, _, et) in enumerate(evs):
            if et != funnel.steps[0]:
                continue
            later = {x for t, _, x in evs[i + 1:] if t <= t0 + funnel.window_seconds * 1000 and x in funnel.steps[1:]}
            day = datetime.fromtimestamp(t0 / 1000, tz=UTC).date().isoformat()
            best[day] = max(best.get(day, 0), 1 + len(later))
        for day, level in best.items():
            counts = out.setdefault(day, [0] * len(funnel.steps))
            for k in range(level):
                counts[k] += 1
    return dict(sorted(out.items()))


def observed(settings: Settings) -> dict[str, Any]:
    f = figures(settings, PROJECT, accepted=0, rejected=(0, 0), dead_lettered=0)
    funnels = {k: v for k, v in f["funnels"].items() if k in ("signup_to_purchase", ANY_FUNNEL.name)}
    # fct_active_users has a row for every day of its window (WAU/MAU roll over quiet days): compare active days
    dau = {d: n for d, n in f["dau"].items() if n}
    return {"events_in_clickhouse": f["events"]["in_clickhouse"], "dau": dau, "funnels": funnels,
            "retention": f["retention"], "sessions": f["sessions"]}


def wait_for(settings: Settings, expected: dict[str, Any], timeout: float, what: str, log_dir: Path) -> float:
    """Poll the marts until they equal ``expected``; returns the seconds it took."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout:
        try:
            last = observed(settings)
        except Exception as exc:  # noqa: BLE001 - marts not created yet
            last = repr(exc)
        if last == expected:
            return time.monotonic() - t0
        time.sleep(5)
    tail = (log_dir / "dagster.log").read_text(errors="replace")[-3000:] if (log_dir / "dagster.log").exists() else ""
    pytest.fail(f"{what}: marts did not reach the hand-computed answers in {timeout:.0f}s\n"
                f"observed: {last}\nexpected: {expected}\n--- dagster.log tail ---\n{tail}")


@dataclass
class Up:
    proc: subprocess.Popen
    env: dict[str, str]
    settings: Settings
    home: Path
    mark: str
    output: Path


def marked_processes(mark: str, root: int) -> dict[int, str]:
    """Processes of this stack: carrying our environment mark, or descendants of `eventpipe up`."""
    procs: dict[int, tuple[int, str]] = {}
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        pid = int(entry.name)
        procs[pid] = (int(fields[1]), cmd)
        if f"{MARK}={mark}".encode() in environ.split(b"\0"):
            found[pid] = cmd
    changed = True
    while changed:  # descendants of `eventpipe up` (the broker runs with a minimal environment)
        changed = False
        for pid, (ppid, cmd) in procs.items():
            if pid not in found and (ppid == root or ppid in found):
                found[pid] = cmd
                changed = True
    return found


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    # a directory of our own: pytest's shared basetemp is pruned by other sessions on this machine
    home = Path(tempfile.mkdtemp(prefix="eventpipe-quiet-"))
    mark = uuid.uuid4().hex
    env = up_env(home, DAGSTER_PARTITIONS_START=(TODAY - timedelta(days=6)).isoformat(), CONSUMER_FLUSH_AGE_S="3",
                 LANDING_SENSOR_INTERVAL_SECONDS="10", CLICKHOUSE_TTL_DAYS="3650", SPARK_BACKFILL_MIN_HOURS="48",
                 STACK_STOP_GRACE_SECONDS="20", **{MARK: mark})
    output = home / "up.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "eventpipe_cli.main", "up"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    settings = load_settings(**{k.lower(): v for k, v in env.items() if k in (
        "EVENTPIPE_HOME", "KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "COLLECTOR_PORT", "DAGSTER_PORT")})
    try:
        deadline = time.monotonic() + 420
        while b"stack is up" not in output.read_bytes():
            assert proc.poll() is None, output.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, output.read_text(errors="replace")[-3000:]
            time.sleep(1)
        yield Up(proc, env, settings, home, mark, output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                pass
        for pid in marked_processes(mark, proc.pid):  # whatever is left (a failed test): never leave it running
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(home, ignore_errors=True)


BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status runs(limit: 50) { runId status
    eventConnection(limit: 200) { events { __typename ... on MessageEvent { message } } } } } } }"""


def wait_backfill(up: Up, backfill_id: str, timeout: float) -> list[dict[str, Any]]:
    """The runs of a finished backfill (Dagster GraphQL)."""
    from orchestration.backfill import graphql

    url = f"http://127.0.0.1:{up.settings.dagster_port}"
    deadline = time.monotonic() + timeout
    while True:
        b = graphql(url, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        runs = b.get("runs") or []
        if b.get("status") not in (None, "REQUESTED", "CANCELING") and runs and all(
                r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        assert time.monotonic() < deadline, b
        time.sleep(5)


def eventpipe(up: Up, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eventpipe_cli.main", *args], env=up.env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quiet_days_get_marts_by_themselves_and_a_runtime_funnel(up: Up) -> None:
    from demo.sender import Sender
    from eventpipe_core.metadata import get_metadata_store

    sent = main_events()
    expected = hand_computed(late=False)
    # the literal answers agree with the independent references (demo.truth, the any-order rule in Python)
    truth = expected_figures(sent, bot_devices=frozenset(), max_per_minute=100, today=TODAY, rejected_requests=0,
                             rejected_events=0, dead_lettered=0)
    assert {k: truth[k] for k in ("dau", "retention", "sessions")} == {k: expected[k] for k in ("dau", "retention", "sessions")}
    assert truth["funnels"]["signup_to_purchase"] == expected["funnels"]["signup_to_purchase"]
    assert any_order_reference(ANY_FUNNEL, sent) == expected["funnels"][ANY_FUNNEL.name]

    key = get_metadata_store(up.settings).create_key(PROJECT)
    collector = f"http://127.0.0.1:{up.settings.collector_port}"
    logs = up.home / "logs"
    with Sender(collector, key, endpoint="/2/httpapi") as sender:
        sender.send(sent)
        # 1. no manual step: every day with data gets its quiet hours loaded and its marts built (no funnel yet)
        before_funnel = {**expected, "funnels": {"signup_to_purchase": expected["funnels"]["signup_to_purchase"]}}
        took = wait_for(up.settings, before_funnel, 900, "quiet days", logs)
        print(f"quiet days: marts equal the hand-computed answers {took:.0f}s after sending")

        # 2. a funnel created at runtime is built for the days already loaded (the command launches the backfill)
        created = eventpipe(up, "funnels", "create", "--project", PROJECT, "--name", ANY_FUNNEL.name,
                            "--steps", ",".join(ANY_FUNNEL.steps), "--window", "7d", "--order", "any")
        assert created.returncode == 0, created.stderr + created.stdout
        assert "backfill" in created.stdout and "days" in created.stdout, created.stdout
        took = wait_for(up.settings, expected, 600, "runtime funnel", logs)
        print(f"runtime funnel: in fct_funnels {took:.0f}s after `eventpipe funnels create`")
        listed = eventpipe(up, "funnels", "list", "--project", PROJECT)
        assert f"{PROJECT}\t{ANY_FUNNEL.name}\tsign_up,activate,purchase\t604800s\tany" in listed.stdout

        # 3. a late event for the oldest day re-loads its (new) hour and rebuilds that day's marts by itself
        sender.send(LATE)
        took = wait_for(up.settings, hand_computed(late=True), 600, "late event", logs)
        print(f"late event: marts updated {took:.0f}s after sending")

    # 4. a CLI backfill of a day's hours: one asset-backfill run of 24 hours, steps in-process; the marts stay right
    backfilled = eventpipe(up, "backfill", "--from", D4.isoformat(), "--to", D4.isoformat())
    assert backfilled.returncode == 0 and "24 hours in 1 run(s)" in backfilled.stdout, backfilled.stderr + backfilled.stdout
    backfill_id = backfilled.stdout.split()[1].rstrip(":")
    runs = wait_backfill(up, backfill_id, 600)
    assert [r["status"] for r in runs] == ["SUCCESS"], runs
    messages = [e.get("message") or "" for e in runs[0]["eventConnection"]["events"]]
    assert any("Executing steps in process" in m for m in messages), messages[:20]
    wait_for(up.settings, hand_computed(late=True), 600, "after the backfill", logs)
    # a day with no events at all: no rows, none of its hours loaded (never filled), and it blocked nothing (D4, D5
    # are built beyond it)
    from demo.dagster_api import DagsterAPI
    from demo.report import ch_client

    db = up.settings.clickhouse.database
    reader = ch_client(up.settings, readonly=True)
    assert reader.query(f"SELECT count() FROM {db}.events WHERE toDate(event_time) = '{D3}'").result_rows == [(0,)]
    api = DagsterAPI(f"http://127.0.0.1:{up.settings.dagster_port}")
    try:
        quiet = api.latest_materializations(("clickhouse_events",), [f"{D3}-{h:02d}:00" for h in range(24)])
        filled = api.latest_materializations(("clickhouse_events",), [f"{D4}-{h:02d}:00" for h in range(24)])
    finally:
        api.close()
    assert quiet == {} and len(filled) == 24


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_up_stops_every_process_and_frees_every_port_under_load(up: Up) -> None:
    ports = [int(up.env["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]), up.settings.clickhouse.port,
             up.settings.collector_port, up.settings.dagster_port, int(up.env["CONSUMER_METRICS_PORT"]),
             up.settings.query_api_port]
    before = marked_processes(up.mark, up.proc.pid)
    names = " ".join(before.values())
    assert "dagster" in names and "tansu" in names and "chserver" in names, before  # the stack really runs
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(2)]
    try:
        t0 = time.monotonic()
        up.proc.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal
        up.proc.wait(300)
        took = time.monotonic() - t0
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    out = up.output.read_text(errors="replace")
    assert up.proc.returncode == 0, out[-3000:]
    assert "stopped cleanly" in out, out[-3000:]
    left = marked_processes(up.mark, up.proc.pid)
    assert left == {}, f"still alive after `eventpipe up` exited: {left}\n{out[-2000:]}"
    assert [p for p in ports if not port_is_free("127.0.0.1", p)] == [], out[-2000:]
    print(f"stopped {len(before)} processes in {took:.1f}s under load; output:\n" +
          "\n".join(line for line in out.splitlines() if "stopped" in line or "kill" in line))
