"""The dead-letter topic ``events.dlq``: the original record bytes, the reason, the coordinates.

A dead letter is the source record's key and value **unchanged** (so a replay re-submits exactly
what the collector produced), with headers carrying the reason and the source topic, partition,
offset and timestamp. Dead letters are at-least-once (a crashed or losing attempt may send one
twice), so everything reading them dedupes by source coordinates.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eventpipe_core.kafka_clients import consumer_config, producer_config
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)

H_REASON = "eventpipe.dlq.reason"
H_TOPIC = "eventpipe.dlq.source_topic"
H_PARTITION = "eventpipe.dlq.source_partition"
H_OFFSET = "eventpipe.dlq.source_offset"
H_TIMESTAMP = "eventpipe.dlq.source_timestamp_ms"
H_WRITER = "eventpipe.dlq.writer"
H_REPLAYED_FROM = "eventpipe.dlq.replayed_from"
MAX_REASON_BYTES = 2000


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    timestamp_ms: int = -1

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset

    def headers(self, writer_id: str = "") -> list[tuple[str, bytes]]:
        return [
            (H_REASON, self.reason.encode()[:MAX_REASON_BYTES]),
            (H_TOPIC, self.topic.encode()),
            (H_PARTITION, str(self.partition).encode()),
            (H_OFFSET, str(self.offset).encode()),
            (H_TIMESTAMP, str(self.timestamp_ms).encode()),
            (H_WRITER, writer_id.encode()),
        ]

    @classmethod
    def from_record(cls, record: Any) -> DeadLetter | None:
        """Parse a consumed ``events.dlq`` record; None if it lacks the dead-letter headers."""
        h = {k: v for k, v in (record.headers or [])}
        try:
            return cls(
                topic=h[H_TOPIC].decode(),
                partition=int(h[H_PARTITION]),
                offset=int(h[H_OFFSET]),
                key=record.key,
                value=record.value,
                reason=h[H_REASON].decode(errors="replace"),
                timestamp_ms=int(h.get(H_TIMESTAMP, b"-1")),
            )
        except (KeyError, ValueError):
            return None


class DlqWriter:
    """Produces dead letters with acks=all and returns only once the broker has all of them."""

    def __init__(self, settings: Settings, writer_id: str, producer: Any = None):
        from kafka import KafkaProducer

        self.topic = settings.kafka_dlq_topic
        self.writer_id = writer_id
        self.producer = producer or KafkaProducer(**producer_config(settings))

    def send_all(self, letters: list[DeadLetter], timeout_s: float = 30.0) -> None:
        """Raise if any dead letter was not acknowledged (the caller retries and does not commit)."""
        futures = [
            self.producer.send(self.topic, key=d.key, value=d.value or b"", headers=d.headers(self.writer_id))
            for d in letters
        ]
        self.producer.flush(timeout=timeout_s)
        for fut in futures:
            fut.get(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close(timeout=5)


class DlqReader:
    """Reads the DLQ topic to its end; ``commit()`` records how far (for resumable replays).

    With ``group_id`` and not ``from_beginning`` it resumes where that group last committed. The end
    is the high watermark of fetch responses, not ListOffsets: Tansu 0.6.0 answers ListOffsets(latest)
    with the last record batch's *base* offset + 1 (bench/repro_tansu_list_offsets.py).
    """

    def __init__(self, settings: Settings, group_id: str | None = None, from_beginning: bool = True):
        from kafka import KafkaConsumer, TopicPartition

        self.group_id = group_id
        self.consumer = KafkaConsumer(**consumer_config(settings, group_id=group_id))
        parts = self.consumer.partitions_for_topic(settings.kafka_dlq_topic) or set()
        self.tps = [TopicPartition(settings.kafka_dlq_topic, p) for p in sorted(parts)]
        self.read_to: dict[Any, int] = {}
        if not self.tps:
            return
        self.consumer.assign(self.tps)
        self.lower_ends = self.consumer.end_offsets(self.tps)  # a lower bound on Tansu, exact on Kafka
        for tp in self.tps:
            committed = None if (from_beginning or group_id is None) else self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
            self.read_to[tp] = self.consumer.position(tp)

    def _done(self, tp: Any) -> bool:
        hw = self.consumer.highwater(tp)
        return hw is not None and self.read_to[tp] >= max(hw, self.lower_ends[tp])

    def __iter__(self) -> Iterator[tuple[Any, DeadLetter | None]]:
        empty_polls = 0
        while not all(self._done(tp) for tp in self.tps):
            batch = self.consumer.poll(timeout_ms=1000)
            if not batch:
                empty_polls += 1
                unknown = [tp for tp in self.tps if self.consumer.highwater(tp) is None]
                if empty_polls >= 3 and all(self.read_to[tp] >= self.lower_ends[tp] for tp in unknown):
                    return  # no fetch answered for those partitions and nothing is missing below their end
                if empty_polls >= 30:
                    raise TimeoutError("DLQ read stalled")
                continue
            empty_polls = 0
            for tp, records in batch.items():
                for record in records:
                    self.read_to[tp] = record.offset + 1
                    yield record, DeadLetter.from_record(record)

    def commit(self) -> None:
        from kafka.structs import OffsetAndMetadata

        if self.group_id is not None and self.tps:
            self.consumer.commit({tp: OffsetAndMetadata(self.read_to[tp], "", -1) for tp in self.tps})

    def close(self) -> None:
        self.consumer.close()


@dataclass
class DlqSummary:
    records: int = 0  # records read from the DLQ topic
    unique: int = 0  # distinct source coordinates
    unparsable: int = 0  # records without dead-letter headers
    by_reason: Counter = field(default_factory=Counter)  # reason prefix -> distinct records
    selected: int = 0  # distinct records matching the replay filter
    replayed: int = 0


def reason_class(reason: str) -> str:
    """Group reasons for counting (and metric labels, so bounded): the text before any ':' or quoted
    value, without trailing numbers."""
    head = re.split(r"[:'\"]", reason, maxsplit=1)[0]
    return re.sub(r"[\s\d.-]+$", "", head)[:60].strip() or "other"


def dedupe(reader: Iterator[tuple[Any, DeadLetter | None]]) -> tuple[list[DeadLetter], DlqSummary]:
    """Dead letters deduped by source coordinates (first seen wins), with counts."""
    summary = DlqSummary()
    seen: dict[tuple[str, int, int], DeadLetter] = {}
    for _record, letter in reader:
        summary.records += 1
        if letter is None:
            summary.unparsable += 1
            continue
        if letter.coordinates not in seen:
            seen[letter.coordinates] = letter
            summary.by_reason[reason_class(letter.reason)] += 1
    summary.unique = len(seen)
    return list(seen.values()), summary


def replay(
    settings: Settings, *, reason_contains: str | None = None, dry_run: bool = False, from_beginning: bool = False,
    target_topic: str | None = None,
) -> DlqSummary:
    """Re-submit dead letters (deduped by source coordinates) to the events topic after a fix.

    Progress is kept as consumer group ``<group>.dlq-replay``, so a second replay only re-submits
    what arrived since; ``from_beginning`` replays everything again. A record that is still invalid
    simply dead-letters again, with its new coordinates.
    """
    group = f"{settings.kafka_consumer_group}.dlq-replay"
    reader = DlqReader(settings, group_id=group, from_beginning=from_beginning or dry_run)
    try:
        letters, summary = dedupe(iter(reader))
        chosen = [d for d in letters if reason_contains is None or reason_contains in d.reason]
        summary.selected = len(chosen)
        if dry_run:
            return summary
        if chosen:
            summary.replayed = _resubmit(settings, chosen, target_topic or settings.kafka_events_topic)
        reader.commit()  # only after every re-submission is acknowledged
        return summary
    finally:
        reader.close()


def dlq_summary(settings: Settings) -> DlqSummary:
    """Counts of the whole DLQ topic, deduped by source coordinates."""
    reader = DlqReader(settings)
    try:
        return dedupe(iter(reader))[1]
    finally:
        reader.close()


def _resubmit(settings: Settings, chosen: list[DeadLetter], topic: str) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(settings))
    try:
        futures = []
        for d in sorted(chosen, key=lambda d: d.coordinates):
            origin = f"{d.topic}/{d.partition}/{d.offset}".encode()
            futures.append(producer.send(topic, key=d.key, value=d.value or b"", headers=[(H_REPLAYED_FROM, origin)]))
        producer.flush(timeout=60)
        for fut in futures:
            fut.get(timeout=60)
    finally:
        producer.close(timeout=5)
    return len(chosen)
