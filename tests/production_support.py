"""Production-profile services for tests: a fresh PostgreSQL database and a Spark standalone cluster.

Both are shared-machine citizens: the database gets a unique name and is dropped afterwards (others use
the same server); every Spark daemon runs in its own process group, stopped with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedded.broker import free_port, wait_for_tcp

POSTGRES_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")


def postgres_available() -> bool:
    import psycopg2

    try:
        psycopg2.connect(connect_timeout=3, **POSTGRES_ADMIN).close()
        return True
    except psycopg2.OperationalError:
        return False


@contextlib.contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the machine's PostgreSQL (trust auth), dropped afterwards; yields its URL."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(**POSTGRES_ADMIN)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://{POSTGRES_ADMIN['user']}@{POSTGRES_ADMIN['host']}:{POSTGRES_ADMIN['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def spark_class() -> Path:
    """``spark-class`` of the pyspark distribution this interpreter uses."""
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()) / "bin" / "spark-class"


@dataclass
class SparkCluster:
    """A Spark standalone master and its workers on 127.0.0.1 (``spark-class …Master`` / ``…Worker``)."""

    work_dir: Path
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    webui_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def state(self) -> dict:
        """The master's JSON status page: alive workers, active and completed applications."""
        with urllib.request.urlopen(f"http://{self.host}:{self.webui_port}/json/", timeout=5) as resp:
            return json.loads(resp.read())

    def _env(self, name: str) -> dict[str, str]:
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return dict(os.environ) | {
            "SPARK_LOCAL_IP": self.host, "SPARK_LOG_DIR": str(logs), "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_WORKER_DIR": str(self.work_dir / name), "SPARK_LOCAL_DIRS": str(self.work_dir / name / "local"),
            "PYSPARK_PYTHON": sys.executable,
        }

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.work_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the daemon for its lifetime
        proc = subprocess.Popen([str(spark_class()), *args], stdout=out, stderr=subprocess.STDOUT, env=self._env(name),
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 120.0) -> SparkCluster:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            master = self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", self.host,
                                            "--port", str(self.port), "--webui-port", str(self.webui_port)])
            wait_for_tcp(self.host, self.port, timeout, master)
            for i in range(self.workers):
                self._spawn(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker", "--host", self.host, "--webui-port", str(free_port()),
                    "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                    "--work-dir", str(self.work_dir / f"worker-{i}"), self.master_url])
            deadline = time.monotonic() + timeout
            while self._alive_workers() < self.workers:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"Spark cluster did not come up; see {self.work_dir}/*.log")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def _alive_workers(self) -> int:
        try:
            return int(self.state().get("aliveworkers", 0))
        except OSError:
            return 0

    def stop(self) -> None:
        """SIGTERM every daemon's process group (the JVM and anything it forked), then SIGKILL stragglers."""
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()
