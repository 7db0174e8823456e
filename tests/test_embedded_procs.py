"""embedded.procs: a component's whole process group is stopped — politely when it obeys SIGTERM, by SIGKILL after
the grace when it (or a child it left behind) does not — and what had to be killed is reported."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from embedded.procs import group_alive, group_members, popen_group, stop_group

CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child', flush=True); time.sleep(600)"
# a parent that ignores SIGTERM and a grandchild that ignores it too (as a stuck code server would)
STUBBORN = f"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", {CHILD!r}])
print("ready", flush=True)
time.sleep(600)
"""
# a parent that exits on SIGTERM but whose child ignores it: killing only the parent's pid would orphan the child
ORPHANING = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {CHILD!r}])
print("ready", flush=True)
time.sleep(600)
"""
POLITE = "import time; print('ready', flush=True); time.sleep(600)"


def start(code: str) -> subprocess.Popen:
    """Start ``code`` in its own group; returns once it (and its child, which shares the pipe) said it is ready."""
    proc = popen_group([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    expected = {"ready"} if code == POLITE else {"ready", "child"}
    assert {proc.stdout.readline().strip() for _ in expected} == expected
    return proc


def test_polite_group_stops_on_sigterm_nothing_killed() -> None:
    proc = start(POLITE)
    assert os.getpgid(proc.pid) == proc.pid  # its own process group
    assert stop_group(proc, grace=10) == []
    assert not group_alive(proc.pid) and proc.returncode is not None


def test_stubborn_group_is_killed_after_the_grace_and_reported() -> None:
    for code in (STUBBORN, ORPHANING):
        proc = start(code)
        members = group_members(proc.pid)
        assert members is not None
        said: list[str] = []
        t0 = time.monotonic()
        killed = stop_group(proc, grace=1.0, name="stubborn", echo=said.append)
        assert 1.0 <= time.monotonic() - t0 < 15
        survivors = {m.pid for m in members} - ({proc.pid} if code == ORPHANING else set())
        assert {m.pid for m in killed} == survivors  # exactly the members still alive after the grace
        assert not group_alive(proc.pid)
        assert said and "killed stubborn" in said[0]
