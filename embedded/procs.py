"""Child processes that can be stopped *whole*: each runs in its own session (process group), and stopping
it signals the group, not just its leader.

Why: `dagster dev` starts a webserver, a daemon, code servers and run workers as its children; under load
it can take longer than any grace to stop, and killing only its pid left those children running and
holding their ports (DESIGN §10). So: SIGTERM to the group → wait up to a bounded grace for every member
to exit → SIGKILL to the group → report which processes had to be killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PROC = Path("/proc")


def popen_group(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session: the child leads its own process group (pgid = pid), which
    also keeps a terminal's Ctrl-C away from it — the stack stops its components itself, in order."""
    return subprocess.Popen(list(cmd), start_new_session=True, **kwargs)


@dataclass(frozen=True)
class Member:
    pid: int
    name: str

    def __str__(self) -> str:
        return f"{self.name}[{self.pid}]"


def group_members(pgid: int) -> list[Member] | None:
    """Live (non-zombie) processes of a process group, from /proc; None where /proc is not available."""
    if not PROC.is_dir():
        return None
    out = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp …  — comm may contain spaces and parentheses
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(Member(int(entry.name), _cmdline(entry) or comm))
    return sorted(out, key=lambda m: m.pid)


def _cmdline(entry: Path) -> str:
    try:
        parts = (entry / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    words = [p.decode(errors="replace") for p in parts if p]
    # `python -m pkg …` / `dagster api grpc …`: the program and up to three words name it well enough
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words[:4])) if words else ""


def group_alive(pgid: int) -> bool:
    members = group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(proc: subprocess.Popen, grace: float, name: str = "", echo: Callable[[str], None] | None = None,
               poll: float = 0.1) -> list[Member]:
    """SIGTERM the process group led by ``proc`` → up to ``grace`` seconds for all of it to exit → SIGKILL
    what is left. Returns (and echoes) the members that had to be killed; reaps the leader."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not linger as a zombie
        if not group_alive(pgid):
            _reap(proc)
            return []
        time.sleep(poll)
    killed = group_members(pgid) or ([Member(pgid, name or "process")] if group_alive(pgid) else [])
    _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < end:
        time.sleep(poll)
    if killed and echo is not None:
        echo(f"  killed {name or 'process group'} after {grace:.0f}s grace: {', '.join(map(str, killed))}")
    return killed


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(5)  # the leader is gone or a zombie: collect its status
    except subprocess.TimeoutExpired:
        pass


def open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
