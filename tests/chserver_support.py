"""Helpers for the chserver tests: start ``eventpipe chserver`` as a real subprocess, talk raw HTTP."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from embedded.broker import free_port

READER = ("reader", "reader")  # the default read-only user of Settings


@dataclass
class ChServer:
    """One ``eventpipe chserver`` process on a free port and its own data dir."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    # the writer's password, put in CLICKHOUSE_URL so every component of a test uses it (as on a real server)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        """The writer's (user, password), e.g. for ``httpx.Client(auth=…)``."""
        return ("default", self.password)

    @property
    def clickhouse_url(self) -> str:
        return f"http://default:{self.password}@{self.host}:{self.port}/analytics"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["EVENTPIPE_HOME"] = str(self.data_dir.parent)
        env["CLICKHOUSE_URL"] = self.clickhouse_url
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "eventpipe_cli.main", "chserver", "--data", str(self.data_dir), "--port", str(self.port)]

    def start(self, timeout: float = 60.0) -> ChServer:
        log_path = self.log_path or self.data_dir.parent / f"chserver-{self.port}.log"
        out = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env())
        self.log_path = log_path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chserver exited with {self.proc.returncode}: {self.log()}")
            if ping(self.url):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"chserver did not answer /ping within {timeout}s: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path and self.log_path.exists() else ""


def start_chserver(data_dir: Path, **kwargs: object) -> ChServer:
    return ChServer(data_dir=data_dir, port=free_port(), **kwargs).start()  # type: ignore[arg-type]


def ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
            return resp.status == 200 and resp.read() == b"Ok.\n"
    except (OSError, urllib.error.URLError):
        return False
