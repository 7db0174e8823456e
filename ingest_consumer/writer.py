"""Records -> typed rows (shared event model) -> one zstd Parquet object per event hour.

Rows are built in chunks and turned into Arrow batches straight away, so a 100k-record batch
never holds 100k Python dicts at once. A record that the event model rejects — or that Arrow
cannot represent (e.g. an integer beyond int64) — becomes a dead letter with the reason.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventpipe_core.event_model import RAW_EVENT_SCHEMA, InvalidEnvelope, envelope_to_row, rows_to_table

CHUNK_ROWS = 8192
PARQUET_COMPRESSION = "zstd"


class BufferedRecord(NamedTuple):
    """What the loop keeps of a Kafka record until its batch is flushed."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class Rejected(NamedTuple):
    record: BufferedRecord
    reason: str


@dataclass
class HourData:
    event_date: str
    event_hour: str
    batches: list[pa.RecordBatch] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=RAW_EVENT_SCHEMA)


@dataclass
class DecodedBatch:
    hours: dict[tuple[str, str], HourData]
    rejected: list[Rejected]


def _decode(record: BufferedRecord, partition: int) -> dict[str, Any]:
    if record.value is None:
        raise InvalidEnvelope("empty record value (tombstone)")
    try:
        return envelope_to_row(record.value, partition, record.offset)
    except InvalidEnvelope:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this record's dead-letter reason
        raise InvalidEnvelope(f"undecodable envelope: {type(exc).__name__}: {exc}") from exc


def _to_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return rows_to_table(rows).combine_chunks().to_batches()[0]


def _add_rows(hour: HourData, rows: list[tuple[BufferedRecord, dict[str, Any]]], rejected: list[Rejected]) -> None:
    try:
        hour.batches.append(_to_batch([r for _, r in rows]))
        return
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    for record, row in rows:  # find the offending rows one by one
        try:
            hour.batches.append(_to_batch([row]))
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            rejected.append(Rejected(record, f"not representable in the lake schema: {type(exc).__name__}: {exc}"))


def decode_records(records: Sequence[BufferedRecord], partition: int, chunk_rows: int = CHUNK_ROWS) -> DecodedBatch:
    """Split a batch into rows grouped by event hour (UTC) and rejected records with reasons."""
    hours: dict[tuple[str, str], HourData] = {}
    rejected: list[Rejected] = []
    for start in range(0, len(records), chunk_rows):
        grouped: dict[tuple[str, str], list[tuple[BufferedRecord, dict[str, Any]]]] = {}
        for record in records[start:start + chunk_rows]:
            try:
                row = _decode(record, partition)
            except InvalidEnvelope as exc:
                rejected.append(Rejected(record, str(exc)))
                continue
            ts = row["event_time"].astimezone(UTC)
            grouped.setdefault((ts.strftime("%Y-%m-%d"), ts.strftime("%H")), []).append((record, row))
        for hour_id, rows in grouped.items():
            hour = hours.setdefault(hour_id, HourData(*hour_id))
            _add_rows(hour, rows, rejected)
    rejected.sort(key=lambda r: r.record.offset)
    return DecodedBatch({k: v for k, v in hours.items() if v.rows}, rejected)


def event_time_range_ms(table: pa.Table) -> tuple[int, int]:
    mm = pc.min_max(table.column("event_time").cast(pa.int64()))
    return int(mm["min"].as_py()), int(mm["max"].as_py())


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=PARQUET_COMPRESSION)
    return buf.getvalue()
