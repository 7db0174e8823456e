"""Produce envelopes to Kafka with librdkafka (confluent-kafka) and know when they are written.

``Producer.produce()`` only enqueues (microseconds, never blocks on the network), so it is called
on the event loop; a background thread serves librdkafka's delivery reports (``poll``), and each
request's reports wake its coroutine through ``call_soon_threadsafe`` once every record of it is
settled — no thread waits for acks. Settings: ``acks=all``, lz4 compression, idempotence when the
broker supports it (:func:`eventpipe_core.kafka_clients.librdkafka_producer_config`), and
``message.timeout.ms`` equal to the collector's produce timeout. A request is answered only when
each of its records is acknowledged, failed or expired — so a record refused with 503 is never
written after the answer. (Before it, a batch in flight when the broker fails may have been written
without the ack arriving: the 503 is then a partial write; the client retries and the
deterministic insert_id lets downstream drop the copies.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from eventpipe_core.kafka_clients import librdkafka_producer_config
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)
RDKAFKA_LOG = logging.getLogger("collector.librdkafka")  # librdkafka's own log lines, through logging

CHUNK = 2000  # records enqueued between two yields to the event loop
FENCED = frozenset({"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER",
                    "INVALID_PRODUCER_ID_MAPPING", "_FATAL", "_FENCED"})


class ProduceError(RuntimeError):
    """Some record of a request was not acknowledged by Kafka (answer 503)."""


class RecordTooLarge(ProduceError):
    """librdkafka refused a record at once as larger than its message limit."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class _Acks:
    """Settles one request's records; resolves an asyncio future once every record is acknowledged,
    failed or known unsent — never earlier, so no record of a refused request is written after the
    answer."""

    __slots__ = ("loop", "pending", "error", "done", "_lock")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.pending = n
        self.error: Any = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _count(self, n: int, exc: Any) -> None:
        with self._lock:
            if exc is not None and self.error is None:
                self.error = exc
            self.pending -= n
            finished = self.pending == 0
        if finished:
            self.loop.call_soon_threadsafe(self._settle)

    def report(self, err: Any, _msg: Any) -> None:
        """librdkafka's delivery report (poll thread)."""
        self._count(1, err)

    def unsent(self, n: int, exc: BaseException) -> None:
        if n:
            self._count(n, exc)


class EventProducer:
    """One librdkafka producer per collector process (worker)."""

    def __init__(self, settings: Settings, *, timeout_s: float | None = None, **overrides: Any) -> None:
        self.settings = settings
        self.topic = settings.kafka_events_topic
        self.timeout_s = timeout_s if timeout_s is not None else settings.collector_produce_timeout_s
        self.config = librdkafka_producer_config(
            settings, client_id="eventpipe-collector", timeout_ms=int(self.timeout_s * 1000), **overrides,
        )
        self._producer: Any = None
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._fatal: Any = None

    # --- lifecycle ---------------------------------------------------------------------------
    def _on_error(self, err: Any) -> None:
        if err.fatal():  # e.g. an idempotence violation: this producer instance is unusable
            log.error("Kafka producer fatal error, recreating it: %s", err)
            self._fatal = err
        else:
            log.debug("Kafka producer: %s", err)

    def _ensure(self) -> Any:
        from confluent_kafka import Producer

        with self._lock:
            if self._closed.is_set():
                raise ProduceError("producer closed")
            if self._producer is not None and self._fatal is not None:
                old, self._producer, self._fatal = self._producer, None, None
                threading.Thread(target=old.flush, args=(self.timeout_s,), daemon=True).start()  # settle its records
            if self._producer is None:
                self._producer = Producer(self.config | {"error_cb": self._on_error, "logger": RDKAFKA_LOG})
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll_loop, name="collector-kafka-poll", daemon=True)
                self._poller.start()
            return self._producer

    def _poll_loop(self) -> None:
        """Serve delivery reports until closed (they run the request callbacks)."""
        while not self._closed.is_set():
            producer = self._producer
            if producer is None:
                time.sleep(0.05)
                continue
            try:
                producer.poll(0.1)
            except Exception:  # noqa: BLE001 - a callback failing must not stop the reports
                log.exception("Kafka delivery report handling failed")

    def start(self) -> None:
        """Create the producer (it connects in the background; the app calls this at startup)."""
        self._ensure()

    def warm_up(self, timeout_s: float) -> bool:
        """Connect and learn the topic now, so the first request does not pay for it (blocking)."""
        try:
            return self._topic_known(timeout_s)
        except Exception:  # noqa: BLE001 - Kafka away: requests get 503 until it is back
            return False

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                remaining = producer.flush(5)
                if remaining:
                    log.warning("closing with %d records not delivered", remaining)
            except Exception:  # noqa: BLE001 - closing on shutdown
                log.exception("closing the Kafka producer")
        if self._poller is not None:
            self._poller.join(2)

    # --- producing ---------------------------------------------------------------------------
    async def produce(self, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Return once every record is acknowledged (acks=all); raise :class:`ProduceError` otherwise.

        Either way, by the time this returns every record enqueued has settled (acknowledged or
        expired after ``message.timeout.ms``). Records are enqueued in chunks with a yield to the
        event loop between chunks, so a 100k-event /batch does not stall other requests.
        """
        if not records:
            return
        from confluent_kafka import KafkaException

        loop = asyncio.get_running_loop()
        acks = _Acks(loop, len(records))
        deadline = time.monotonic() + self.timeout_s
        topic = self.topic
        sent = 0
        try:
            producer = self._ensure()
            produce, report = producer.produce, acks.report
            while sent < len(records):
                for key, value in records[sent:sent + CHUNK]:
                    while True:
                        try:
                            produce(topic, value, key, on_delivery=report)
                            break
                        except BufferError:  # local queue full: let the reports drain it
                            if time.monotonic() > deadline:
                                raise ProduceError("producer queue full until the deadline") from None
                            await asyncio.sleep(0.005)
                        except KafkaException as exc:
                            err = exc.args[0] if exc.args else None
                            if err is not None and err.name() == "MSG_SIZE_TOO_LARGE":
                                raise RecordTooLarge(sent, str(err)) from None
                            raise
                    sent += 1
                if sent < len(records):
                    await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            acks.unsent(len(records) - sent, exc)
            raise
        except Exception as exc:
            acks.unsent(len(records) - sent, exc)
            if sent == 0 and isinstance(exc, ProduceError):
                raise
            if sent == 0:
                raise ProduceError(f"Kafka produce failed: {exc!r}") from exc
            await self._wait(acks)  # what was enqueued must settle before we answer
            if isinstance(exc, ProduceError):
                raise
            raise ProduceError(f"Kafka produce failed: {exc!r}") from exc
        await self._wait(acks)
        if acks.error is not None:
            self._check_fenced(acks.error)
            raise ProduceError(f"Kafka produce failed: {acks.error}")

    def _check_fenced(self, err: Any) -> None:
        """An idempotent producer whose id the broker no longer knows (seen on Tansu after a restart:
        PRODUCER_FENCED on every record) never recovers: the next request gets a new producer."""
        name = err.name() if hasattr(err, "name") else ""
        if name in FENCED or (hasattr(err, "fatal") and err.fatal()):
            log.warning("Kafka producer unusable (%s): the next request creates a new one", name)
            self._fatal = err

    async def _wait(self, acks: _Acks) -> None:
        try:
            # Records expire in librdkafka after message.timeout.ms; the margin covers the reports.
            await asyncio.wait_for(asyncio.shield(acks.done), self.timeout_s + 5.0)
        except TimeoutError:
            raise ProduceError(f"Kafka did not settle the records within {self.timeout_s:.0f}s") from None

    def _topic_known(self, timeout_s: float) -> bool:
        md = self._ensure().list_topics(self.topic, timeout=timeout_s)
        topic = md.topics.get(self.topic)
        return topic is not None and topic.error is None and bool(topic.partitions)

    async def ready(self, timeout_s: float = 3.0) -> bool:
        """Kafka reachable and the events topic known."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, self._topic_known, timeout_s - 0.5), timeout_s)
        except Exception:  # noqa: BLE001 - not ready, whatever the reason
            return False
