"""Records -> typed rows (shared event model) -> one zstd Parquet object per event hour.

Rows are built in chunks and turned into Arrow batches straight away, so a 100k-record batch
never holds 100k Python dicts at once. A record that the event model rejects — or that Arrow
cannot represent (e.g. an integer beyond int64) — becomes a dead letter with the reason.
"""

from __future__ import annotations

import gc
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventpipe_core.event_model import (
    COLUMN_NAMES,
    EVENT_FIELDS,
    FLOAT_COLUMNS,
    INT64_MAX,
    INT64_MIN,
    INT_COLUMNS,
    JSON_COLUMNS,
    MAX_TIME_MS,
    MIN_TIME_MS,
    RAW_EVENT_SCHEMA,
    InvalidEnvelope,
    as_text,
    envelope_to_row,
    json_text,
    parse_envelope,
    rows_to_table,
)

CHUNK_ROWS = 8192


def _event_columns() -> tuple[tuple[str, str, str], ...]:
    """(event field, lake column, kind) of the columns taken from the event."""
    names = set(RAW_EVENT_SCHEMA.names)
    out = []
    for name in EVENT_FIELDS:
        col = COLUMN_NAMES.get(name, name)
        if col not in names or col == "event_time":
            continue
        kind = "json" if col in JSON_COLUMNS else "int" if col in INT_COLUMNS else "float" if col in FLOAT_COLUMNS else "str"
        out.append((name, col, kind))
    return tuple(out)


_EVENT_COLUMNS = _event_columns()
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
    """The per-record reference path (used for a chunk the bulk path could not take whole)."""
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


def _decode_chunk_per_record(records: Sequence[BufferedRecord], partition: int, hours: dict[tuple[str, str], HourData],
                             rejected: list[Rejected]) -> None:
    grouped: dict[tuple[str, str], list[tuple[BufferedRecord, dict[str, Any]]]] = {}
    for record in records:
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


def _loads(value: bytes) -> Any:
    """The values ``json.loads`` gives (the reference decoder's), faster: msgspec parses integers
    beyond 64 bits exactly, where orjson silently turns them into floats (-9223372036854775809
    became INT64_MIN and passed the range check); the standard library for what msgspec refuses
    (NaN, 1e400, lone surrogates, a BOM)."""
    try:
        return msgspec.json.decode(value)
    except msgspec.MsgspecError:
        try:
            return json.loads(value)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidEnvelope(f"undecodable JSON: {exc}") from exc


def _json_text(value: Any) -> str | None:
    """``json_text`` through orjson (same JSON; the standard library for what orjson cannot write)."""
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json_text(value)


def _str_or_none(value: Any) -> str | None:
    return value if value is None or type(value) is str else as_text(value)


def _event_input_schema() -> pa.Schema:
    """The event's own fields (not the JSON ones) with their lake types, under the event's names."""
    types = {f.name: f.type for f in RAW_EVENT_SCHEMA}
    fields = [pa.field(name, types[col]) for name, col, kind in _EVENT_COLUMNS if kind != "json"]
    return pa.schema([*fields, pa.field("time", pa.int64())])


_EVENT_INPUT_SCHEMA = _event_input_schema()


def _columns(events: list[dict[str, Any]], envelopes: list[dict[str, Any]], offsets: list[int], partition: int) -> pa.Table:
    """The rows of valid envelopes (same values as ``envelope_to_row``). Fast path: Arrow reads the
    typed fields of the event dicts in C; a chunk with a value it will not take as is (an integer
    field sent as 1.5, an id sent as a number — which the reference converts) goes column by column
    in Python instead."""
    try:
        typed = pa.Table.from_pylist(events, schema=_EVENT_INPUT_SCHEMA)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return _columns_python(events, envelopes, offsets, partition)
    cols: dict[str, Any] = {}
    for name, col, kind in _EVENT_COLUMNS:
        cols[col] = typed.column(name) if kind != "json" else [_json_text(e.get(name)) for e in events]
    cols["event_time"] = typed.column("time").cast(pa.timestamp("ms", tz="UTC"))
    _envelope_columns(cols, envelopes, offsets, partition)
    return pa.table([cols[f.name] if isinstance(cols[f.name], pa.ChunkedArray) else pa.array(cols[f.name], type=f.type)
                     for f in RAW_EVENT_SCHEMA], schema=RAW_EVENT_SCHEMA)


def _envelope_columns(cols: dict[str, Any], envelopes: list[dict[str, Any]], offsets: list[int], partition: int) -> None:
    cols["project"] = [env["project"] for env in envelopes]
    cols["received_at"] = [int(env["received_at"]) for env in envelopes]
    cols["client_ip"] = [_str_or_none(env.get("client_ip")) for env in envelopes]
    cols["upload_id"] = [_str_or_none(env.get("upload_id")) for env in envelopes]
    cols["plan_violations"] = [_json_text(v) if (v := env.get("plan_violations")) else None for env in envelopes]
    cols["kafka_partition"] = [partition] * len(offsets)
    cols["kafka_offset"] = offsets


def _columns_python(events: list[dict[str, Any]], envelopes: list[dict[str, Any]], offsets: list[int],
                    partition: int) -> pa.Table:
    cols: dict[str, Any] = {}
    for name, col, kind in _EVENT_COLUMNS:
        values = [e.get(name) for e in events]
        if kind == "json":
            values = [_json_text(x) for x in values]
        elif kind == "int":
            values = [x if x is None or type(x) is int else int(x) for x in values]
        elif kind == "float":
            values = [x if x is None else float(x) for x in values]
        else:
            values = [_str_or_none(x) for x in values]
        cols[col] = values
    cols["event_time"] = [int(e["time"]) for e in events]
    _envelope_columns(cols, envelopes, offsets, partition)
    return pa.table([pa.array(cols[f.name], type=f.type) for f in RAW_EVENT_SCHEMA], schema=RAW_EVENT_SCHEMA)


def _split_by_hour(table: pa.Table, hour_ids: list[int], hours: dict[tuple[str, str], HourData]) -> None:
    """Arrow-native split: one filter per distinct event hour of the chunk."""
    distinct = sorted(set(hour_ids))
    if len(distinct) == 1:
        parts = [(distinct[0], table)]
    else:
        keys = pa.array(hour_ids, type=pa.int64())
        parts = [(h, table.filter(pc.equal(keys, h))) for h in distinct]
    for h, part in parts:
        ts = datetime.fromtimestamp(h * 3600, tz=UTC)
        hour_id = (ts.strftime("%Y-%m-%d"), ts.strftime("%H"))
        hours.setdefault(hour_id, HourData(*hour_id)).batches.extend(part.combine_chunks().to_batches())


def _decode_chunk_bulk(records: Sequence[BufferedRecord], partition: int, hours: dict[tuple[str, str], HourData],
                       rejected: list[Rejected]) -> None:
    events: list[dict[str, Any]] = []
    envelopes: list[dict[str, Any]] = []
    offsets: list[int] = []
    good: list[BufferedRecord] = []
    for record in records:
        try:
            if record.value is None:
                raise InvalidEnvelope("empty record value (tombstone)")
            envelope = _loads(record.value)
            events.append(parse_envelope(envelope))
        except InvalidEnvelope as exc:
            rejected.append(Rejected(record, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - same as the reference path
            rejected.append(Rejected(record, f"undecodable envelope: {type(exc).__name__}: {exc}"))
            continue
        envelopes.append(envelope)
        offsets.append(record.offset)
        good.append(record)
    if not good:
        return
    try:
        table = _columns(events, envelopes, offsets, partition)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        _decode_chunk_per_record(good, partition, hours, rejected)  # find the offending rows one by one
        return
    _split_by_hour(table, [int(e["time"]) // 3_600_000 for e in events], hours)


# --- fast path: msgspec structs whose constraints only accept what the shared rule accepts --------
# A record the structs take is valid by ``event_problems``/``parse_envelope`` (the constraints are
# that rule restricted to exact JSON types: strings as strings, integers as integers, numbers within
# range) and its row is built column-wise with no per-record Python; every other record — a number
# sent as a string, a float ``time``, a lone surrogate, anything the structs refuse — goes through the
# reference path above, so the shared rule alone decides what is dead-lettered.
_F64 = msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)  # finite (JSON's 1e400 is inf)
_I64 = msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)
_MS = msgspec.Meta(ge=MIN_TIME_MS, le=MAX_TIME_MS)
_REQUIRED = {"insert_id": Annotated[str, msgspec.Meta(min_length=1)],
             "event_type": Annotated[str, msgspec.Meta(min_length=1)], "time": Annotated[int, _MS]}


def _fast_event_struct() -> type:
    fields: list[Any] = [(name, _REQUIRED[name]) for name in ("insert_id", "event_type", "time")]
    for name, _col, kind in _EVENT_COLUMNS:
        if name in _REQUIRED:
            continue
        typ: Any = {"json": msgspec.Raw, "int": Annotated[int, _I64] | None, "float": Annotated[float, _F64] | None,
                    "str": str | None}[kind]
        fields.append((name, typ, msgspec.Raw() if kind == "json" else None))
    return msgspec.defstruct("FastEvent", fields, gc=False)  # no cycles: GC need not track 100k of them


_FastEvent = _fast_event_struct()
_FAST_NAMES = _FastEvent.__struct_fields__
_FAST_COLUMN = {name: col for name, col, _kind in _EVENT_COLUMNS} | {"time": "event_time"}
_FAST_KIND = {name: kind for name, _col, kind in _EVENT_COLUMNS}


class _FastEnvelope(msgspec.Struct, gc=False):
    v: Literal[1]
    event: _FastEvent  # type: ignore[valid-type]
    project: str
    received_at: Annotated[int, _MS]
    client_ip: str | None = None
    upload_id: str | None = None
    plan_violations: list[str] | None = None


_FAST_DECODE = msgspec.json.Decoder(_FastEnvelope).decode
_NULL = b"null"


def _fast_decode(values: list[bytes | None]) -> list[Any]:
    """Each value as a ``_FastEnvelope``, or None where the structs refuse it (reference path)."""
    try:
        return list(map(_FAST_DECODE, values))  # type: ignore[arg-type]
    except (msgspec.MsgspecError, TypeError):
        envs: list[Any] = []
        for value in values:
            try:
                envs.append(_FAST_DECODE(value))  # type: ignore[arg-type]
            except (msgspec.MsgspecError, TypeError):
                envs.append(None)
        return envs


def _json_column(raws: Sequence[Any]) -> pa.Array:
    """Raw JSON slices -> ``json_text`` of their values (keys sorted, compact); null or absent -> null.

    One parse and one sorted serialisation of the column's distinct slices (property maps repeat a
    lot: parsing each distinct text once was most of this column's time): when that equals the
    slices joined (the collector writes keys sorted), every slice already is its canonical text and
    the column is built from the slices' bytes; otherwise each distinct value is re-serialised."""
    n = len(raws)
    present = [i for i, r in enumerate(raws) if r and (len(r) != 4 or bytes(r) != _NULL)]  # Raw != bytes
    if not present:
        return pa.nulls(n, pa.string())
    chunks = [bytes(raws[i]) for i in present] if len(present) < n else list(map(bytes, raws))
    distinct = list(dict.fromkeys(chunks))  # a value's text depends on its bytes alone
    joined = b"[" + b",".join(distinct) + b"]"  # each slice is one JSON value
    try:
        parsed = msgspec.json.decode(joined)
    except msgspec.MsgspecError:  # e.g. NaN or 1e400 somewhere: one by one, as json.loads reads them
        parsed = [_loads(c) for c in distinct]
    else:
        try:
            canonical = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS) == joined
        except TypeError:  # an integer beyond 64 bits: json_text writes it
            canonical = False
        if canonical:
            lengths = np.fromiter(map(len, chunks), dtype=np.int32, count=len(chunks))
            offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            texts = pa.StringArray.from_buffers(len(chunks), pa.py_buffer(offsets), pa.py_buffer(b"".join(chunks)))
            if len(present) == n:
                return texts
            where = np.full(n, -1, dtype=np.int64)
            where[present] = np.arange(len(present))
            return texts.take(pa.array(where, mask=where < 0))
    text = {c: _json_text(value) for c, value in zip(distinct, parsed, strict=True)}
    out: list[str | None] = [None] * n
    for i, c in zip(present, chunks, strict=True):
        out[i] = text[c]
    return pa.array(out, type=pa.string())


def _fast_table(envs: list[Any], offsets: list[int], partition: int) -> tuple[pa.Table, np.ndarray]:
    """The rows of envelopes the structs took (same values as ``envelope_to_row``), and their
    event-hour numbers (epoch hours, floored)."""
    events = [e.event for e in envs]
    by_name = dict(zip(_FAST_NAMES, zip(*map(msgspec.structs.astuple, events), strict=True), strict=True))
    types = {f.name: f.type for f in RAW_EVENT_SCHEMA}
    cols: dict[str, Any] = {}
    for name, values in by_name.items():
        col = _FAST_COLUMN[name]
        if name == "time":
            continue
        cols[col] = _json_column(values) if _FAST_KIND[name] == "json" else pa.array(values, type=types[col])
    times = np.fromiter(by_name["time"], dtype=np.int64, count=len(events))
    cols["event_time"] = pa.array(times).cast(types["event_time"])
    cols["project"] = pa.array([e.project for e in envs], type=pa.string())
    cols["received_at"] = pa.array([e.received_at for e in envs], type=pa.int64()).cast(types["received_at"])
    cols["client_ip"] = pa.array([e.client_ip for e in envs], type=pa.string())
    cols["upload_id"] = pa.array([e.upload_id for e in envs], type=pa.string())
    cols["plan_violations"] = pa.array([_json_text(e.plan_violations) if e.plan_violations else None for e in envs],
                                       type=pa.string())
    cols["kafka_partition"] = pa.array(np.full(len(envs), partition, dtype=np.int32))
    cols["kafka_offset"] = pa.array(np.asarray(offsets, dtype=np.int64))
    return pa.table([cols[f.name] for f in RAW_EVENT_SCHEMA], schema=RAW_EVENT_SCHEMA), times // 3_600_000


def _no_id_mask(table: pa.Table) -> np.ndarray | None:
    """Rows with neither a non-empty user_id nor a non-empty device_id (None if there are none)."""
    has = pc.or_kleene(pc.greater(pc.binary_length(table.column("user_id")), 0),
                       pc.greater(pc.binary_length(table.column("device_id")), 0))
    missing = pc.invert(pc.fill_null(has, False))
    if not pc.any(missing).as_py():
        return None
    return missing.to_numpy(zero_copy_only=False)


def _split_hours(table: pa.Table, hour_ids: np.ndarray, hours: dict[tuple[str, str], HourData]) -> None:
    """Arrow-native split: one filter per distinct event hour (rows keep their order)."""
    distinct = np.unique(hour_ids)
    if len(distinct) == 1:
        parts = [(int(distinct[0]), table)]
    else:
        parts = [(int(h), table.filter(pa.array(hour_ids == h))) for h in distinct]
    for h, part in parts:
        ts = datetime.fromtimestamp(h * 3600, tz=UTC)
        hour_id = (ts.strftime("%Y-%m-%d"), ts.strftime("%H"))
        hours.setdefault(hour_id, HourData(*hour_id)).batches.extend(part.combine_chunks().to_batches())


def buffered(record: Any) -> BufferedRecord:
    """A BufferedRecord as is; a confluent-kafka Message (what the loop buffers) as one."""
    if isinstance(record, BufferedRecord):
        return record
    return BufferedRecord(record.offset(), record.key(), record.value(), record.timestamp()[1])


def _decode_chunk_fast(records: Sequence[Any], partition: int, hours: dict[tuple[str, str], HourData],
                       rejected: list[Rejected]) -> None:
    if records and isinstance(records[0], BufferedRecord):
        values, all_offsets = [r.value for r in records], [r.offset for r in records]
    else:  # confluent-kafka Messages: no per-record tuple until one is needed
        values, all_offsets = [m.value() for m in records], [m.offset() for m in records]
    envs = _fast_decode(values)
    slow = [buffered(r) for r, e in zip(records, envs, strict=True) if e is None]
    if len(slow) == len(records):
        _decode_chunk_bulk(slow, partition, hours, rejected)
        return
    taken = [e for e in envs if e is not None]
    offsets = [o for o, e in zip(all_offsets, envs, strict=True) if e is not None]
    try:
        table, hour_ids = _fast_table(taken, offsets, partition)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        _decode_chunk_bulk([buffered(r) for r in records], partition, hours, rejected)
        return
    no_id = _no_id_mask(table)  # the one cross-field rule: a truthy user_id or device_id
    if no_id is not None:
        taken_records = [r for r, e in zip(records, envs, strict=True) if e is not None]
        slow = sorted(slow + [buffered(r) for r, bad in zip(taken_records, no_id, strict=True) if bad],
                      key=lambda r: r.offset)
        keep = pa.array(~no_id)
        table, hour_ids = table.filter(keep), hour_ids[~no_id]
    if slow:  # the reference path decides these; rows of both paths merged back in offset order
        slow_hours: dict[tuple[str, str], HourData] = {}
        _decode_chunk_bulk(slow, partition, slow_hours, rejected)
        if slow_hours:
            extra = pa.concat_tables([h.table() for h in slow_hours.values()])
            table = pa.concat_tables([table, extra]).sort_by("kafka_offset")
            times = table.column("event_time").cast(pa.int64()).to_numpy()
            hour_ids = times // 3_600_000
    _split_hours(table, hour_ids, hours)


def decode_records(records: Sequence[Any], partition: int, chunk_rows: int = CHUNK_ROWS) -> DecodedBatch:
    """Split a batch (BufferedRecords or confluent-kafka Messages) into rows grouped by event hour
    (UTC) and rejected records with reasons.

    Fast path (every record the collector writes): msgspec decodes each value into typed structs
    whose constraints are the shared rule (:func:`eventpipe_core.event_model.event_problems`)
    restricted to exact JSON types; the structs' fields become Arrow columns (property maps from
    their raw JSON slices, kept as they are when already canonical — sorted keys, compact — and
    re-serialised otherwise); the split by event hour is one Arrow filter per hour. General path
    (any record the structs refuse): parsed as ``json.loads`` would, checked by
    :func:`~eventpipe_core.event_model.parse_envelope` — the only place a dead-letter reason comes
    from — and turned into Arrow column by column; a chunk Arrow refuses (e.g. a lone surrogate) is
    redone record by record to find the offending ones. Rows of both paths are merged back in offset
    order. Rows equal ``envelope_to_row``'s (JSON text columns are the same JSON, possibly formatted
    differently: orjson writes ``1e16`` where Python writes ``1e+16``, and a non-finite number inside
    a map as null) — tests/test_ingest_units.py checks both paths against each other and the
    reference on hostile inputs. The garbage collector is paused meanwhile (the structs and tuples
    of a 100k-record batch hold no cycles; collecting while they pile up cost more than decoding).
    """
    hours: dict[tuple[str, str], HourData] = {}
    rejected: list[Rejected] = []
    paused = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, len(records), chunk_rows):
            _decode_chunk_fast(records[start:start + chunk_rows], partition, hours, rejected)
    finally:
        if paused:
            gc.enable()
    rejected.sort(key=lambda r: r.record.offset)
    return DecodedBatch({k: v for k, v in sorted(hours.items()) if v.rows}, rejected)


def merge_decoded(parts: Sequence[DecodedBatch]) -> DecodedBatch:
    """Consecutive decoded pieces of one batch (in offset order) as one: what ``decode_records`` of
    the whole batch gives when each piece but the last is a whole number of ``CHUNK_ROWS`` chunks."""
    if len(parts) == 1:
        return parts[0]
    hours: dict[tuple[str, str], HourData] = {}
    rejected: list[Rejected] = []
    for part in parts:
        for hour_id, hour in part.hours.items():
            hours.setdefault(hour_id, HourData(*hour_id)).batches.extend(hour.batches)
        rejected.extend(part.rejected)
    rejected.sort(key=lambda r: r.record.offset)
    return DecodedBatch(dict(sorted(hours.items())), rejected)


def event_time_range_ms(table: pa.Table) -> tuple[int, int]:
    mm = pc.min_max(table.column("event_time").cast(pa.int64()))
    return int(mm["min"].as_py()), int(mm["max"].as_py())


# Per-event (or per-request) identifiers and timestamps: nearly every value distinct, so a
# dictionary only costs time until Arrow gives up on it. Plain-encoded, zstd packs them better
# (bench/landing.py: 48 -> 38 B/event on the lake, and the write ~20 % faster).
NO_DICTIONARY_COLUMNS = frozenset({"insert_id", "kafka_offset", "event_time", "received_at", "session_id", "event_id",
                                   "upload_id"})
_DICTIONARY_COLUMNS = [f.name for f in RAW_EVENT_SCHEMA if f.name not in NO_DICTIONARY_COLUMNS]


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=PARQUET_COMPRESSION, use_dictionary=_DICTIONARY_COLUMNS)
    return buf.getvalue()
