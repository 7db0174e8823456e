"""Where a landed row goes: its event hour (UTC), and the attempt-unique object name.

The name encodes the Kafka partition, the offset range of the batch, the write time and a random
part: unique per attempt (so a losing or crashed attempt never overwrites a committed object) and
self-describing (so cleanup can tell an orphan's age without asking the store).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from eventpipe_core.lake_catalog import RAW_PREFIX, hour_dir

_NAME_RE = re.compile(r"^p(\d{5})-o(\d{12})-(\d{12})-(\d{13})-([0-9a-f]{12})\.parquet$")


@dataclass(frozen=True)
class ObjectName:
    kafka_partition: int
    start_offset: int
    end_offset: int
    written_ms: int
    nonce: str

    @property
    def attempt_id(self) -> str:
        return f"{self.written_ms:013d}-{self.nonce}"

    def __str__(self) -> str:
        return f"p{self.kafka_partition:05d}-o{self.start_offset:012d}-{self.end_offset:012d}-{self.attempt_id}.parquet"


def new_attempt_id(now_ms: int | None = None) -> str:
    """``<written epoch ms>-<12 hex>``: orders attempts in time and makes names unique."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{now_ms:013d}-{uuid.uuid4().hex[:12]}"


def object_key(event_date: str, event_hour: str, partition: int, start: int, end: int, attempt_id: str) -> str:
    written, _, nonce = attempt_id.partition("-")
    name = ObjectName(partition, start, end, int(written), nonce)
    return f"{hour_dir(RAW_PREFIX, event_date, event_hour)}{name}"


def parse_object_key(key: str) -> ObjectName | None:
    """The parts of a landed object's key, or None if the key is not one of ours."""
    m = _NAME_RE.match(key.rsplit("/", 1)[-1])
    if not m or not key.startswith(RAW_PREFIX):
        return None
    return ObjectName(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5])
