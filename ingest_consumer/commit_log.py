"""Offset tracking in the lake: one partition's commit log, as seen and extended by one writer.

The lake, not Kafka, says where a partition's next batch starts (see the package docstring).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eventpipe_core.lake_catalog import CommitRecord, commit_key, last_partition_commit
from eventpipe_core.lake_store import LakeStore

log = logging.getLogger(__name__)


class ForeignLogError(RuntimeError):
    """The lake's commit log for this partition belongs to another topic: refuse to mix them."""


@dataclass
class PartitionLog:
    """The next ``seq`` to write and the committed ``end_offset`` (None: nothing committed yet)."""

    lake: LakeStore
    topic: str
    kafka_partition: int
    next_seq: int = 0
    end_offset: int | None = None

    @classmethod
    def load(cls, lake: LakeStore, topic: str, kafka_partition: int) -> PartitionLog:
        last = last_partition_commit(lake, kafka_partition)
        plog = cls(lake, topic, kafka_partition)
        if last is not None:
            plog._check_topic(last)
            plog.next_seq, plog.end_offset = last.seq + 1, last.end_offset
        return plog.refresh()

    def _check_topic(self, record: CommitRecord) -> None:
        if record.topic != self.topic:
            raise ForeignLogError(
                f"lake commit log of partition {self.kafka_partition} is for topic {record.topic!r}, "
                f"not {self.topic!r}: use a separate LAKE_URL per topic"
            )

    def refresh(self) -> PartitionLog:
        """Follow records other writers committed since we last looked (probing seq by seq)."""
        while True:
            try:
                record = CommitRecord.from_json(self.lake.get(commit_key(self.kafka_partition, self.next_seq)))
            except KeyError:
                return self
            self._check_topic(record)
            self.next_seq, self.end_offset = record.seq + 1, record.end_offset

    def try_commit(self, record: CommitRecord) -> bool:
        """Create ``record`` at its seq: True if we won it, False if another writer already has."""
        assert record.seq == self.next_seq and record.kafka_partition == self.kafka_partition
        if self.end_offset is not None:
            assert record.start_offset == self.end_offset, "a batch must start at the committed end"
        if not self.lake.put_if_absent(record.key, record.to_json()):
            return False
        self.next_seq, self.end_offset = record.seq + 1, record.end_offset
        return True

    def resolve(self, record: CommitRecord) -> bool | None:
        """After a create of ``record`` raised (it may still have been stored, e.g. a timeout after the
        write): True if the stored record is this attempt's, False if another writer's, None if absent."""
        try:
            stored = CommitRecord.from_json(self.lake.get(record.key))
        except KeyError:
            return None
        if stored.writer_id == record.writer_id and stored.extra.get("attempt") == record.extra.get("attempt"):
            self.next_seq, self.end_offset = stored.seq + 1, stored.end_offset
            return True
        return False
