"""Produce envelopes to Kafka without blocking the event loop, and know when they are written.

``send()`` of kafka-python can block (metadata fetch, full buffer), so it runs in a thread pool;
acknowledgements come back through the record futures' callbacks (on the producer's I/O
thread) and wake the request's coroutine once every record is acknowledged — no thread waits for
acks. The producer's ``delivery_timeout_ms`` equals the collector's produce timeout, so a record
that was not acknowledged in time expires in the producer too instead of being written long after
the client was told 503. (A record already in flight when the broker fails may still have been
written: the client retries and the deterministic insert_id lets downstream drop the copy.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventpipe_core.kafka_clients import producer_config
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """Some record of a request was not acknowledged by Kafka (answer 503)."""


class _Acks:
    """Counts acknowledgements of one request's records; resolves an asyncio future when all are in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.pending = n
        self.error: BaseException | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _one(self, exc: BaseException | None) -> None:
        with self._lock:
            if exc is not None and self.error is None:
                self.error = exc
            self.pending -= 1
            finished = self.pending == 0 or exc is not None
        if finished:
            self.loop.call_soon_threadsafe(self._settle)

    def ok(self, _metadata: Any) -> None:
        self._one(None)

    def failed(self, exc: BaseException) -> None:
        self._one(exc)


class EventProducer:
    """One KafkaProducer per collector process, created lazily (the collector starts without Kafka)."""

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
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(**self.config)
            return self._producer

    def _send_all(self, records: Sequence[tuple[bytes | None, bytes]], acks: _Acks) -> None:
        producer = self._get()
        for key, value in records:
            future = producer.send(self.topic, key=key, value=value)
            future.add_callback(acks.ok)
            future.add_errback(acks.failed)

    async def produce(self, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Return once every record is acknowledged (acks=all); raise :class:`ProduceError` otherwise."""
        if not records:
            return
        loop = asyncio.get_running_loop()
        acks = _Acks(loop, len(records))
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._send_all, records, acks), self.timeout_s)
            await asyncio.wait_for(asyncio.shield(acks.done), self.timeout_s + 1.0)
        except TimeoutError:
            raise ProduceError(f"Kafka did not acknowledge within {self.timeout_s:.0f}s") from None
        except Exception as exc:  # noqa: BLE001 - any client error means "not written"
            raise ProduceError(f"Kafka produce failed: {exc!r}") from exc
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
            return bool(self._get().partitions_for(self.topic))
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
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing on shutdown
                log.exception("closing the Kafka producer")
        self._executor.shutdown(wait=False, cancel_futures=True)
