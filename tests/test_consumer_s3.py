"""The S3 lake path against moto's S3 server, including an outage mid-stream.

The outage is injected with a small TCP proxy in front of the server: closing it refuses new
connections and cuts open ones, like a stopped endpoint, while moto (in-memory) keeps its objects.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedded.broker import free_port
from eventpipe_core.lake_catalog import committed_objects
from eventpipe_core.lake_store import open_lake
from eventpipe_core.settings import Settings, load_settings
from ingest_consumer.cleanup import delete_orphans
from tests.conftest import AWS_TEST_KEYS
from tests.ingest_support import (
    ROOT,
    assert_exactly_once,
    committed_keys,
    consumer_env,
    create_topics,
    end_offsets,
    landed_keys,
    log_text,
    produce,
    start_consumer,
    stop,
    wait_landed,
)
from tests.test_consumer_faults import Producing


class FlakyProxy:
    """TCP forwarder that can go down (listener closed, live connections reset) and come back."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for attempt in range(50):
            try:
                ls.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread; close() alone would not
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture()
def flaky_s3() -> Iterator[tuple[FlakyProxy, str]]:
    """(proxy, bucket): a private moto server behind a proxy the test can take down."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = FlakyProxy(("127.0.0.1", port))
    proxy.up()
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    from eventpipe_core.lake_store import s3_client

    s3_client(load_settings(aws_endpoint_url=proxy.url, **AWS_TEST_KEYS)).create_bucket(Bucket=bucket)
    yield proxy, bucket
    proxy.down()
    server.stop()


def test_s3_outage_mid_stream_loses_and_duplicates_nothing(
    settings: Settings, service_env: dict[str, str], tmp_path: Path, flaky_s3: tuple[FlakyProxy, str]
) -> None:
    proxy, bucket = flaky_s3
    topic, dlq = create_topics(settings)
    lake_url = f"s3://{bucket}/prefix"
    env = consumer_env(service_env, topic, dlq, lake_url, aws_endpoint_url=proxy.url, consumer_flush_records=1500,
                       consumer_flush_age_s=0.5)
    lake = open_lake(settings.model_copy(update={"aws_endpoint_url": proxy.url}), lake_url)
    log = tmp_path / "consumer.log"
    # Phase 1 (background, paced) until some batches are committed; phase 2 is produced while S3 is
    # down, so the consumer must have batches to flush during the outage however fast it landed
    # phase 1 (a fast consumer had landed everything before the cut, and then never saw it).
    producing = Producing(settings, topic, 20_000, poison_every=1000, pace_s=0.3)
    producing.start()
    proc = start_consumer(env, log)
    try:
        deadline = time.monotonic() + 90
        while len(list(lake.list("raw/events/_commits/"))) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, log_text(log)[-3000:]
            time.sleep(0.3)
        proxy.down()
        seen_before = len(log_text(log))
        during_good, during_bad = produce(settings, topic, 10_000, poison_every=1000, start=20_000)
        deadline = time.monotonic() + 60  # until a flush of the outage's records failed and was retried
        while (retries := log_text(log)[seen_before:].count("; retrying in ")) < 2:
            assert proc.poll() is None, "the consumer must ride out the outage"
            assert time.monotonic() < deadline, f"no lake retry seen during the outage: {log_text(log)[-3000:]}"
            time.sleep(0.2)
        assert retries >= 2 and proc.poll() is None, "the consumer must ride out the outage"
        proxy.up()
        good, bad = producing.result()
        good, bad = good | during_good, bad | during_bad
        wait_landed(lake, end_offsets(good | bad), timeout=180, procs=[proc])
    finally:
        proxy.up() if proxy.listener is None else None
        assert stop(proc) == 0, log_text(log)[-3000:]
    text = log_text(log)
    assert "failed" in text and "retrying" in text, "the outage must have been seen and retried"
    records = assert_exactly_once(lake, topic, good, bad)
    delete_orphans(lake, grace_s=0)
    assert landed_keys(lake) == committed_keys(records)

    out = subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "lake", "files", "--date", "2026-01-01"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    uris = out.stdout.split()
    assert sorted(uris) == sorted(f"s3://{bucket}/prefix/{o.key}" for o in committed_objects(lake))


def test_s3_lake_lands_on_the_session_moto_server(
    settings: Settings, service_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    """The plain S3 path with the shared fixtures (AWS_ENDPOINT_URL from the session env)."""
    topic, dlq = create_topics(settings)
    lake_url = f"s3://{s3_bucket}/landing-{topic}"
    lake = open_lake(settings, lake_url)
    good, bad = produce(settings, topic, 5000, poison_every=100)
    log = tmp_path / "consumer.log"
    proc = start_consumer(consumer_env(service_env, topic, dlq, lake_url), log)
    try:
        wait_landed(lake, end_offsets(good | bad), timeout=120, procs=[proc])
    finally:
        assert stop(proc) == 0, log_text(log)[-3000:]
    records = assert_exactly_once(lake, topic, good, bad)
    assert all(lake.uri(o.key).startswith(f"s3://{s3_bucket}/landing-") for r in records for o in r.objects)
