"""Produce envelopes to Kafka without blocking the event loop, and know when they are written.

``send()`` of kafka-python can block (metadata fetch, full buffer), so it runs in a thread pool;
acknowledgements come back through the record futures' callbacks (on the producer's I/O
thread) and wake the request's coroutine once every record is acknowledged — no thread waits for
acks. The producer's ``delivery_timeout_ms`` equals the collector's produce timeout, and a request
is answered only when each of its records is acknowledged, failed or expired — so a record refused
with 503 is never written after the answer. (Before it, a batch in flight when the broker fails
may have been written without the ack arriving: the 503 is then a partial write; the client
retries and the deterministic insert_id lets downstream drop the copies.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventpipe_core.kafka_clients import producer_config
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """Some record of a request was not acknowledged by Kafka (answer 503)."""


class _Acks:
    """Settles one request's records; resolves an asyncio future once every record is acknowledged,
    failed or known unsent — never earlier, so no record of a refused request is written after the
    answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.pending = n
        self.error: BaseException | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _count(self, n: int, exc: BaseException | None) -> None:
        with self._lock:
            if exc is not None and self.error is None:
                self.error = exc
            self.pending -= n
            finished = self.pending <= 0
        if finished:
            self.loop.call_soon_threadsafe(self._settle)

    def ok(self, _metadata: Any) -> None:
        self._count(1, None)

    def failed(self, exc: BaseException) -> None:
        self._count(1, exc)

    def unsent(self, n: int, exc: BaseException) -> None:
        self._count(n, exc)


class EventProducer:
    """One KafkaProducer per collector process.

    It is created in a background thread (kafka-python's constructor blocks until it can
    bootstrap, 30 s without a broker), so the collector starts and answers 503 while Kafka is
    away, and picks Kafka up when it appears.
    """

    def __init__(self, settings: Settings, *, timeout_s: float | None = None, threads: int = 4, **overrides: Any) -> None:
        self.settings = settings
        self.topic = settings.kafka_events_topic
        self.timeout_s = timeout_s if timeout_s is not None else settings.collector_produce_timeout_s
        timeout_ms = int(self.timeout_s * 1000)
        base = producer_config(settings)
        linger = int(base.get("linger_ms", 5))
        self.config = producer_config(
            settings,
            client_id="eventpipe-collector",
            delivery_timeout_ms=timeout_ms,
            request_timeout_ms=min(int(base.get("request_timeout_ms", 10_000)), max(500, timeout_ms - linger - 200)),
            max_block_ms=min(int(base.get("max_block_ms", 10_000)), max(500, timeout_ms // 2)),
            **overrides,
        )
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="collector-produce")
        self._producer: Any = None
        self._created = threading.Event()
        self._creator: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _create(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(**self.config)
        except Exception as exc:  # noqa: BLE001 - retried by the next request
            log.warning("Kafka producer not available yet: %r", exc)
            return
        with self._lock:
            if self._closed:
                producer.close(timeout=1)
                return
            self._producer = producer
            self._created.set()

    def _start_creating(self) -> None:
        with self._lock:
            if self._producer is None and not self._closed and (self._creator is None or not self._creator.is_alive()):
                self._creator = threading.Thread(target=self._create, name="collector-kafka-connect", daemon=True)
                self._creator.start()

    def start(self) -> None:
        """Begin connecting to Kafka in the background (the app does this at startup)."""
        self._start_creating()

    def _wait_producer(self, deadline: float) -> Any:
        self._start_creating()
        if not self._created.wait(max(0.0, deadline - time.monotonic())):
            raise ProduceError("Kafka not reachable")
        return self._producer

    def _send_all(self, records: Sequence[tuple[bytes | None, bytes]], acks: _Acks, deadline: float) -> None:
        """Send until done or past the deadline; what was not sent is settled as failed at once."""
        sent = 0
        try:
            producer = self._wait_producer(deadline)
            for key, value in records:
                if time.monotonic() > deadline:
                    raise ProduceError("produce deadline passed before every record was sent")
                future = producer.send(self.topic, key=key, value=value)
                sent += 1
                future.add_callback(acks.ok)
                future.add_errback(acks.failed)
        except Exception as exc:  # noqa: BLE001 - any client error means "not written"
            acks.unsent(len(records) - sent, exc)

    async def produce(self, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Return once every record is acknowledged (acks=all); raise :class:`ProduceError` otherwise.

        Either way, by the time this returns every record sent has settled (acknowledged or
        expired after ``delivery_timeout_ms``).
        """
        if not records:
            return
        loop = asyncio.get_running_loop()
        acks = _Acks(loop, len(records))
        deadline = time.monotonic() + self.timeout_s
        await loop.run_in_executor(self._executor, self._send_all, records, acks, deadline)
        try:
            # Records expire in the producer after delivery_timeout_ms; the margin covers the callbacks.
            await asyncio.wait_for(asyncio.shield(acks.done), self.timeout_s + 5.0)
        except TimeoutError:
            raise ProduceError(f"Kafka did not settle the records within {self.timeout_s:.0f}s") from None
        if acks.error is not None:
            raise ProduceError(f"Kafka produce failed: {acks.error!r}")

    def _reachable(self) -> bool:
        for server in self.settings.bootstrap_servers:
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=1.0):
                    pass
            except OSError:
                continue
            self._start_creating()
            return self._created.wait(2.0) and bool(self._producer.partitions_for(self.topic))
        return False

    async def ready(self, timeout_s: float = 3.0) -> bool:
        """Kafka reachable and the events topic known."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, self._reachable), timeout_s)
        except Exception:  # noqa: BLE001 - not ready, whatever the reason
            return False

    def close(self) -> None:
        with self._lock:
            producer, self._producer, self._closed = self._producer, None, True
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing on shutdown
                log.exception("closing the Kafka producer")
        self._executor.shutdown(wait=False, cancel_futures=True)
