"""The landing loop: poll, buffer per partition, flush (DLQ -> objects -> conditional commit record).

The protocol and why it is exactly-once is in the package docstring; this module is its loop.
"""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventpipe_core.kafka_clients import librdkafka_consumer_config
from eventpipe_core.lake_catalog import CommitRecord, LandedObject
from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import Settings
from ingest_consumer.cleanup import delete_orphans
from ingest_consumer.commit_log import PartitionLog
from ingest_consumer.dlq import DeadLetter, DlqWriter, reason_class
from ingest_consumer.metrics import LandingMetrics
from ingest_consumer.partitioner import new_attempt_id, object_key
from ingest_consumer.writer import (
    CHUNK_ROWS,
    BufferedRecord,
    DecodedBatch,
    decode_records,
    event_time_range_ms,
    merge_decoded,
    to_parquet,
)

log = logging.getLogger(__name__)
RDKAFKA_LOG = logging.getLogger("ingest_consumer.librdkafka")  # librdkafka's own log lines, through logging
T = TypeVar("T")

POLL_TIMEOUT_S = 0.5
SHUTDOWN_FLUSH_S = 15.0  # SIGTERM: time left to flush before giving up (the stack kills after 20 s)


_message_error = operator.methodcaller("error")  # C-level per-message calls
_message_partition = operator.methodcaller("partition")


class FlushAborted(Exception):
    """Shutting down while the lake or DLQ kept failing: the batch stays uncommitted (re-read later)."""


@dataclass
class PartitionState:
    """One assigned partition: its lake log, the next expected offset and the open batch.

    The open batch is decoded as it fills, ``CHUNK_ROWS`` records at a time (``decoded``), so the
    decoding overlaps librdkafka's fetching and the batch is held as Arrow rather than as Kafka
    messages; ``buffer`` holds the records not decoded yet. Chunk boundaries are those
    ``decode_records`` of the whole batch would use, so the result is the same."""

    log: PartitionLog
    expected: int | None  # next offset to take; None = whatever comes first (nothing committed yet)
    buffer: list[Any] = field(default_factory=list)  # confluent-kafka Messages (or BufferedRecords)
    decoded: list[DecodedBatch] = field(default_factory=list)
    count: int = 0  # records in the open batch (decoded or not)
    first_offset: int = 0
    bytes: int = 0
    opened_at: float = 0.0

    def add(self, record: BufferedRecord) -> None:
        self.extend([record], len(record.value or b"") + len(record.key or b""), record.offset, record.offset)

    def extend(self, records: list[Any], size: int, first: int, last: int) -> None:
        if not self.count:
            self.opened_at = time.monotonic()
            self.first_offset = first
        self.buffer.extend(records)
        self.count += len(records)
        self.bytes += size
        self.expected = last + 1

    def predecode(self, partition: int) -> None:
        """Decode the whole chunks of the buffer now (the remainder waits for the flush)."""
        whole = len(self.buffer) - len(self.buffer) % CHUNK_ROWS
        if whole:
            self.decoded.append(decode_records(self.buffer[:whole], partition))
            del self.buffer[:whole]

    def take_decoded(self, partition: int) -> DecodedBatch:
        """The whole open batch decoded."""
        return merge_decoded([*self.decoded, decode_records(self.buffer, partition)])

    def reset(self, expected: int | None) -> None:
        self.buffer, self.decoded, self.count, self.bytes, self.expected = [], [], 0, 0, expected


def parse_partitions(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return sorted({int(p) for p in value.split(",") if p.strip()})
    except ValueError:
        raise ValueError(f"CONSUMER_ASSIGN_PARTITIONS must be comma-separated integers, got {value!r}") from None


class LandingConsumer:
    """One member of the landing group (or a manually assigned instance)."""

    def __init__(self, settings: Settings, lake: LakeStore | None = None, metrics: LandingMetrics | None = None,
                 writer_id: str | None = None):
        self.settings = settings
        self.topic = settings.kafka_events_topic
        self.lake = lake or open_lake(settings)
        self.metrics = metrics or LandingMetrics()
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        self.parts: dict[int, PartitionState] = {}
        self.pending: set[int] = set()  # assigned, lake position not read yet
        self.consumer: Any = None
        self.dlq: DlqWriter | None = None
        self._stop_deadline: float | None = None
        self._last_log = time.monotonic()
        self._last_cleanup = 0.0
        self._window_records = 0
        self.stats: collections.Counter[str] = collections.Counter()

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to flush, commit and leave (safe from a signal handler)."""
        self.stop_event.set()

    def _connect(self) -> None:
        from confluent_kafka import Consumer

        s = self.settings
        cfg = librdkafka_consumer_config(s, client_id=f"eventpipe-landing-{self.writer_id}")
        self.consumer = Consumer(cfg | {"logger": RDKAFKA_LOG, "error_cb": self._on_error})
        self.dlq = DlqWriter(s, self.writer_id)
        manual = parse_partitions(s.consumer_assign_partitions)
        if manual is not None:
            self.pending.update(manual)
            self.metrics.assigned.set(len(self.pending))
            log.info("manually assigned %s partitions %s (no group coordination)", self.topic, manual)
        else:
            self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_revoke)
            log.info("joining group %s on topic %s as %s", s.kafka_consumer_group, self.topic, self.writer_id)

    def _on_error(self, err: Any) -> None:
        log.warning("Kafka consumer: %s", err)

    def _positions(self) -> list[Any]:
        """What this member fetches: every positioned partition from its next expected offset."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        return [TopicPartition(self.topic, p, OFFSET_BEGINNING if st.expected is None else st.expected)
                for p, st in sorted(self.parts.items())]

    def _reassign(self) -> None:
        # assign() replaces the fetch set and positions; records fetched but not yet taken are
        # dropped and fetched again from these positions, which is what we want after a seek.
        self.consumer.assign(self._positions())

    def _on_revoke(self, _consumer: Any, revoked: list[Any]) -> None:
        for tp in revoked:
            state = self.parts.pop(tp.partition, None)
            self.pending.discard(tp.partition)
            if state is not None and state.count:
                self.metrics.batches_discarded.inc()
                log.info("partition %d revoked: discarded %d buffered records (not committed)", tp.partition, state.count)
        # librdkafka's rebalance waits for an *unassign* here (an assign of an empty list stalled the
        # join on Tansu); the eager protocol revokes everything anyway.
        if self.parts:
            self._reassign()
        else:
            self.consumer.unassign()
        self.metrics.assigned.set(len(self.parts) + len(self.pending))

    def _on_assign(self, _consumer: Any, assigned: list[Any]) -> None:
        # Nothing is fetched for a partition until its lake position is read. One attempt here, so
        # fetching starts within this consume() call (waiting for the loop cost the rest of the
        # poll timeout); a failure leaves the partition pending for the loop, which retries.
        for tp in assigned:
            if tp.partition not in self.parts:
                self.pending.add(tp.partition)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        for p in sorted(self.pending):
            try:
                self._position(p, PartitionLog.load(self.lake, self.topic, p))
            except Exception as exc:  # noqa: BLE001 - the loop retries with backoff
                log.info("partition %d: lake position not read yet (%s); retrying", p, exc)
        self._reassign()
        self.metrics.assigned.set(len(self.parts) + len(self.pending))

    def _position(self, p: int, plog: PartitionLog) -> None:
        self.pending.discard(p)
        self.parts[p] = PartitionState(plog, plog.end_offset)
        log.info("partition %d resumes at lake offset %s (seq %d)", p, plog.end_offset, plog.next_seq)

    def _init_pending(self) -> None:
        if not self.pending:
            return
        for p in sorted(self.pending):
            plog = self._retry(lambda p=p: PartitionLog.load(self.lake, self.topic, p), "read_log")
            if p not in self.pending:  # revoked meanwhile
                continue
            self._position(p, plog)
        self._reassign()

    # --- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Run until :meth:`stop`; then flush open batches, commit and leave the group."""
        self._cleanup(force=True)
        self._connect()
        self.metrics.ready.set(1)
        try:
            while not self.stop_event.is_set():
                self._init_pending()
                self._poll_once()
                self._flush_due()
                self._periodic()
            self._stop_deadline = self._stop_deadline or time.monotonic() + SHUTDOWN_FLUSH_S
            for state in list(self.parts.values()):
                if state.count:
                    self._flush(state)
        except FlushAborted as exc:
            log.warning("shutdown without committing the open batches: %s", exc)
        finally:
            self.metrics.ready.set(0)
            self._close()

    def _close(self) -> None:
        if self.dlq is not None:
            try:
                self.dlq.close()
            except Exception as exc:  # noqa: BLE001 - closing anyway
                log.debug("closing DLQ producer: %s", exc)
        if self.consumer is not None:
            self.consumer.close()  # leaves the group (no offsets committed: they are only hints)
        log.info("consumer closed")

    def _poll_once(self) -> None:
        timeout = POLL_TIMEOUT_S
        ages = [s.opened_at for s in self.parts.values() if s.count]
        if ages:
            timeout = max(0.0, min(timeout, min(ages) + self.settings.consumer_flush_age_s - time.monotonic()))
        try:
            messages = self.consumer.consume(self.settings.consumer_max_poll_records, timeout)
        except Exception as exc:  # noqa: BLE001 - librdkafka reconnects by itself; back off and poll again
            log.warning("poll failed (%s); retrying", exc)
            self.stop_event.wait(1.0)
            return
        if any(map(_message_error, messages)):
            for m in messages:
                if m.error() is not None:
                    log.warning("fetch error on %s [%s]: %s", m.topic(), m.partition(), m.error())
            messages = [m for m in messages if m.error() is None]
        # A poll returns runs of one partition's records (fetch batches): group the runs in C.
        by_partition: dict[int, list[Any]] = {}
        for p, run in itertools.groupby(messages, key=_message_partition):
            by_partition.setdefault(p, []).extend(run)
        for p, records in by_partition.items():
            self._take(p, records)

    def _take(self, p: int, records: list[Any]) -> None:
        """Buffer one poll's records of partition ``p`` (in offset order), flushing at the thresholds.

        Bulk: the records are sliced at the expected offset and at the flush thresholds, not looked
        at one by one (the per-record loop was a third of the landing's time)."""
        state = self.parts.get(p)
        if state is None:
            return  # revoked or not yet positioned: the assign after init re-fetches
        s = self.settings
        i, n = 0, len(records)
        if state.expected is not None:
            while i < n and records[i].offset() < state.expected:
                i += 1  # already landed (or re-delivered after a seek)
        while i < n:
            room = max(1, s.consumer_flush_records - state.count)
            chunk = records[i:i + room]
            sizes = [len(m) for m in chunk]  # value bytes
            total = sum(sizes)
            if state.bytes + total >= s.consumer_flush_bytes:  # cut where the byte threshold is reached
                acc, cut = state.bytes, 0
                while cut < len(chunk) and acc < s.consumer_flush_bytes:
                    acc += sizes[cut]
                    cut += 1
                chunk, total = chunk[:cut], acc - state.bytes
            first, last = chunk[0].offset(), chunk[-1].offset()
            expected = state.expected if state.expected is not None else first
            if first > expected or last - first != len(chunk) - 1:
                log.warning("partition %d: offsets absent in Kafka between %d and %d (retention/compaction); the "
                            "batch covers them", p, expected, last)
            state.extend(chunk, total, first, last)  # the Messages themselves: decoding reads them column-wise
            i += len(chunk)
            self.metrics.records_consumed.inc(len(chunk))
            self._window_records += len(chunk)
            if state.count >= s.consumer_flush_records or state.bytes >= s.consumer_flush_bytes:
                if not self._flush(state):
                    return  # lost to another writer: we seeked; the rest of this poll is stale
            else:
                state.predecode(p)

    def _flush_due(self) -> None:
        now = time.monotonic()
        for state in list(self.parts.values()):
            if state.count and now - state.opened_at >= self.settings.consumer_flush_age_s:
                self._flush(state)

    # --- flushing ----------------------------------------------------------------------------
    def _backoff(self, op: str, exc: Exception, delay: float) -> float:
        """Sleep before retrying ``op``; raise FlushAborted once a shutdown deadline would pass."""
        self.metrics.lake_retries.labels(op).inc()
        if self.stop_event.is_set() and self._stop_deadline is None:  # SIGTERM during an outage: bounded wait
            self._stop_deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        if self._stop_deadline is not None and time.monotonic() + delay > self._stop_deadline:
            raise FlushAborted(f"{op}: {exc}") from exc
        log.warning("%s failed (%s: %s); retrying in %.1fs", op, type(exc).__name__, exc, delay)
        time.sleep(delay)
        return min(delay * 2, self.settings.consumer_retry_max_backoff_s)

    def _retry(self, fn: Callable[[], T], op: str) -> T:
        """Retry with exponential backoff until it works: lake/DLQ failures are never committed past."""
        delay = 0.2
        while True:
            try:
                return fn()
            except FlushAborted:
                raise
            except Exception as exc:  # noqa: BLE001 - every lake/DLQ failure is retried
                delay = self._backoff(op, exc, delay)

    def _flush(self, state: PartitionState) -> bool:
        """Land the open batch of one partition. True if committed, False if another writer won its seq."""
        plog, n_records = state.log, state.count
        p = plog.kafka_partition
        start = plog.end_offset if plog.end_offset is not None else state.first_offset
        end = state.expected if state.expected is not None else start
        decoded = state.take_decoded(p)
        letters = [DeadLetter(self.topic, p, rj.record.offset, rj.record.key, rj.record.value, rj.reason, rj.record.timestamp_ms)
                   for rj in decoded.rejected]
        if letters:
            assert self.dlq is not None
            self._retry(lambda: self.dlq.send_all(letters), "dlq_produce")

        tables = {hour_id: hour.table() for hour_id, hour in sorted(decoded.hours.items())}
        payloads = {hour_id: to_parquet(t) for hour_id, t in tables.items()}
        rewrite_after_ms = self.settings.consumer_orphan_grace_s * 1000 / 2
        attempt, objects = "", ()
        uncertain: CommitRecord | None = None  # a record whose create raised
        delay = 0.2
        while True:
            if uncertain is not None:  # was it stored anyway?
                outcome = self._retry(lambda r=uncertain: plog.resolve(r), "read_log")
                if outcome is not None:
                    won, record = outcome, uncertain
                    break
                uncertain = None
            if not attempt or time.time() * 1000 - int(attempt.split("-", 1)[0]) > rewrite_after_ms:
                # Fresh attempt id: objects older than half the grace period might be taken for
                # orphans by a concurrent cleanup. The old ones are left to cleanup.
                attempt = new_attempt_id()
                objects = self._write_objects(p, start, end, attempt, tables, payloads)
            record = CommitRecord(
                topic=self.topic, kafka_partition=p, seq=plog.next_seq, start_offset=start, end_offset=end,
                objects=objects, committed_at_ms=int(time.time() * 1000), writer_id=self.writer_id,
                records=n_records, dead_lettered=len(letters),
                extra={"attempt": attempt, "dead_lettered_offsets": [d.offset for d in letters]},
            )
            try:
                won = plog.try_commit(record)
                break
            except Exception as exc:  # noqa: BLE001 - retried; the next round first resolves the ambiguity
                uncertain = record
                delay = self._backoff("commit", exc, delay)

        if won:
            state.reset(end)
            m = self.metrics
            m.batches_committed.inc()
            m.rows_landed.inc(record.rows)
            m.bytes_landed.inc(sum(len(b) for b in payloads.values()))
            for d in letters:
                m.dead_lettered.labels(reason_class(d.reason)).inc()
            m.last_commit.set_to_current_time()
            self.stats["rows"] += record.rows
            self.stats["dead_letters"] += len(letters)
            self.stats["batches"] += 1
            self._hint(p, end, record.seq)
            log.debug("partition %d seq %d committed [%d, %d): %d rows in %d objects, %d dead letters",
                      p, record.seq, start, end, record.rows, len(objects), len(letters))
            return True

        self.metrics.commit_conflicts.inc()
        self.stats["conflicts"] += 1
        self._delete_objects(objects)
        self._retry(plog.refresh, "read_log")
        log.warning("partition %d: seq %d was committed by another writer; dropped [%d, %d) and resume at %s",
                    p, record.seq, start, end, plog.end_offset)
        self._seek(state, plog.end_offset)
        return False

    def _write_objects(
        self, p: int, start: int, end: int, attempt: str, tables: dict, payloads: dict
    ) -> tuple[LandedObject, ...]:
        out = []
        for (date, hour), table in tables.items():
            key = object_key(date, hour, p, start, end, attempt)
            self._retry(lambda key=key, data=payloads[(date, hour)]: self.lake.put(key, data), "lake_put")
            lo, hi = event_time_range_ms(table)
            out.append(LandedObject(key, date, hour, table.num_rows, lo, hi))
        return tuple(out)

    def _delete_objects(self, objects: tuple[LandedObject, ...]) -> None:
        for obj in objects:
            try:
                self.lake.delete(obj.key)
            except Exception as exc:  # noqa: BLE001 - an uncommitted object left behind is cleanup's job
                log.info("could not delete uncommitted %s (%s); cleanup will", obj.key, exc)

    def _seek(self, state: PartitionState, offset: int | None) -> None:
        state.reset(offset)
        self._reassign()

    def _hint(self, p: int, end: int, seq: int) -> None:
        """Kafka offset commit = a hint for lag tools; correctness never reads it."""
        from confluent_kafka import TopicPartition

        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, end, metadata=f"lake seq {seq}")], asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - e.g. rebalance in progress; the lake already has it
            log.debug("offset hint for partition %d not committed: %s", p, exc)

    # --- housekeeping ------------------------------------------------------------------------
    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self.settings.consumer_log_interval_s:
            self._log_status(now - self._last_log)
            self._last_log = now
        self._cleanup()

    def _log_status(self, elapsed: float) -> None:
        from confluent_kafka import TopicPartition

        lags: dict[int, int] = {}
        for p, state in sorted(self.parts.items()):
            try:  # from fetch responses (cached): not ListOffsets, which Tansu answers wrong
                _low, hw = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except Exception:  # noqa: BLE001 - nothing fetched yet
                continue
            if hw is not None and hw >= 0 and state.expected is not None:
                lags[p] = max(0, hw - state.expected)
                self.metrics.lag.labels(str(p)).set(lags[p])
        open_batches = sum(1 for s in self.parts.values() if s.count)
        self.metrics.open_batches.set(open_batches)
        log.info("landing: %.0f records/s, lag per partition %s, open batches %d, assigned %s, committed batches %d "
                 "(%d rows, %d dead letters), commit conflicts %d",
                 self._window_records / max(elapsed, 1e-9), lags, open_batches, sorted(self.parts),
                 self.stats["batches"], self.stats["rows"], self.stats["dead_letters"], self.stats["conflicts"])
        self._window_records = 0

    def _cleanup(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_cleanup < self.settings.consumer_cleanup_interval_s:
            return
        self._last_cleanup = now
        try:
            delete_orphans(self.lake, self.settings.consumer_orphan_grace_s)
        except Exception as exc:  # noqa: BLE001 - cleanup is best effort; next round retries
            log.warning("cleanup failed: %s", exc)

