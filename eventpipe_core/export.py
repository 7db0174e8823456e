"""Raw export of a project's stored events from the enriched lake (Amplitude's Export API and `eventpipe export`).

Rules (the contract the API, the CLI and their tests share):

* The range is ``start``/``end`` in Amplitude's ``YYYYMMDDTHH`` form (UTC; the hour may have one or two
  digits, ``20260105T5``); **both hours are included** (Amplitude: "end: last hour included"). A
  malformed value, ``end`` before ``start`` or a range wider than ``EXPORT_MAX_HOURS`` is an
  :class:`ExportRangeError` naming the parameter (HTTP 400).
* The source is the enriched lake (``enriched/events/event_date=…/event_hour=…/``): every event ever
  stored, one row per ``insert_id`` (enrichment deduplicates each hour; a retried event keeps its
  ``time``, hence its hour), with the enrichment fields (session, identity, geo, user agent, bot flag).
* One gzipped JSON-lines file per hour that has events, named like Amplitude's
  ``<project>/<project>_<YYYY-MM-DD>_<H>#0.json.gz``, rows in (event_time, insert_id) order. Each line
  carries every enriched column; JSON columns (``event_properties``, ``user_properties``, ``groups``,
  ``group_properties``) as objects, timestamps as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC strings, plus
  Amplitude's ``$insert_id`` alias.
* Memory is bounded by one lake object of one hour plus one record batch, never by the export's size:
  the zip is written to an unseekable sink (data descriptors, ZIP64) and drained as it grows.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventpipe_core.lake_catalog import ENRICHED_PREFIX, hour_dir
from eventpipe_core.lake_store import LakeStore

_HOUR_RE = re.compile(r"^(\d{8})T(\d{1,2})$")
JSON_COLUMNS = ("event_properties", "user_properties", "groups", "group_properties")
BATCH_ROWS = 8192


class ExportRangeError(ValueError):
    """A bad export range; ``param`` names the offending parameter."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def parse_hour(value: str | None, param: str) -> datetime:
    if not value:
        raise ExportRangeError(param, f"{param} is required (YYYYMMDDTHH, UTC)")
    m = _HOUR_RE.match(value.strip())
    if not m:
        raise ExportRangeError(param, f"{param} must look like YYYYMMDDTHH (UTC), got {value!r}")
    try:
        day = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise ExportRangeError(param, f"{param} is not a calendar date: {value!r}") from None
    hour = int(m.group(2))
    if hour > 23:
        raise ExportRangeError(param, f"{param} hour must be 0-23, got {value!r}")
    return day + timedelta(hours=hour)


def parse_range(start: str | None, end: str | None, max_hours: int) -> list[datetime]:
    """Hour starts from ``start`` to ``end``, both included."""
    first, last = parse_hour(start, "start"), parse_hour(end, "end")
    if last < first:
        raise ExportRangeError("end", f"end ({end}) is before start ({start})")
    n = int((last - first) / timedelta(hours=1)) + 1
    if n > max_hours:
        raise ExportRangeError("end", f"end: the range covers {n} hours; at most {max_hours} (EXPORT_MAX_HOURS) per export")
    return [first + timedelta(hours=i) for i in range(n)]


def hour_file_name(project: str, hour: datetime, ext: str = "json.gz") -> str:
    return f"{project}/{project}_{hour:%Y-%m-%d}_{hour.hour}#0.{ext}"


def hour_objects(lake: LakeStore, hour: datetime) -> list[str]:
    return sorted(k for k in lake.list(hour_dir(ENRICHED_PREFIX, f"{hour:%Y-%m-%d}", f"{hour:%H}")) if k.endswith(".parquet"))


def iter_hour_batches(lake: LakeStore, project: str, hour: datetime) -> Iterator[pa.RecordBatch]:
    """The project's rows of one hour, batch by batch (one lake object in memory at a time)."""
    for key in hour_objects(lake, hour):
        pf = pq.ParquetFile(io.BytesIO(lake.get(key)))
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            picked = batch.filter(pc.equal(batch.column("project"), project))
            if picked.num_rows:
                yield picked


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def batch_to_jsonl(batch: pa.RecordBatch) -> bytes:
    """One JSON object per row (see the module docstring for the shape)."""
    columns: dict[str, list[Any]] = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col.cast(pa.timestamp("ms", tz="UTC")), format="%Y-%m-%d %H:%M:%S")
        elif pa.types.is_date(col.type):
            col = col.cast(pa.string())
        values = col.to_pylist()
        if name in JSON_COLUMNS:
            values = [_json_or_text(v) for v in values]
        columns[name] = values
    names = list(columns)
    out = bytearray()
    for i in range(batch.num_rows):
        row = {name: columns[name][i] for name in names}
        row["$insert_id"] = row.get("insert_id")
        out += orjson.dumps(row)
        out += b"\n"
    return bytes(out)


@dataclass
class HourBatches:
    hour: datetime
    batches: Iterator[pa.RecordBatch]


def iter_export_hours(lake: LakeStore, project: str, hours: Iterable[datetime]) -> Iterator[HourBatches]:
    """Hours that hold at least one of the project's rows, each with its batches (first batch already read)."""
    for hour in hours:
        it = iter_hour_batches(lake, project, hour)
        first = next(it, None)
        if first is None:
            continue

        def chain(first: pa.RecordBatch = first, rest: Iterator[pa.RecordBatch] = it) -> Iterator[pa.RecordBatch]:
            yield first
            yield from rest

        yield HourBatches(hour, chain())


class _Sink(io.RawIOBase):
    """An unseekable byte sink the zip writer fills and the response generator drains."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: ANN001 - bytes-like
        data = bytes(b)
        self.chunks.append(data)
        self.size += len(data)
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def iter_export_zip(
    hours: Iterator[HourBatches], project: str, on_hour: Callable[[datetime, int], None] | None = None
) -> Iterator[bytes]:
    """Stream a zip of one gzipped JSONL file per hour (entries stored: the payload is already gzip)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for item in hours:
            rows = 0
            info = zipfile.ZipInfo(hour_file_name(project, item.hour), date_time=item.hour.timetuple()[:6])
            with zf.open(info, mode="w", force_zip64=True) as entry:
                with gzip.GzipFile(fileobj=entry, mode="wb", mtime=0, compresslevel=6) as gz:
                    for batch in item.batches:
                        gz.write(batch_to_jsonl(batch))
                        rows += batch.num_rows
                        if sink.size:
                            yield sink.drain()
                            sink.size = 0
            if on_hour:
                on_hour(item.hour, rows)
    yield sink.drain()


def hour_jsonl_gz(item: HourBatches) -> tuple[bytes, int]:
    """One hour as a gzipped JSONL object (the CLI uploads objects of this size)."""
    buf = io.BytesIO()
    rows = 0
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for batch in item.batches:
            gz.write(batch_to_jsonl(batch))
            rows += batch.num_rows
    return buf.getvalue(), rows


def hour_parquet(item: HourBatches) -> tuple[bytes, int]:
    """One hour as a zstd Parquet object with the enriched schema."""
    buf = io.BytesIO()
    rows = 0
    writer: pq.ParquetWriter | None = None
    for batch in item.batches:
        if writer is None:
            writer = pq.ParquetWriter(buf, batch.schema, compression="zstd")
        writer.write_batch(batch)
        rows += batch.num_rows
    if writer is not None:
        writer.close()
    return buf.getvalue(), rows


def export_object_key(project: str, hour: datetime, fmt: str) -> str:
    """Where `eventpipe export` writes one hour: JSONL like the zip entries, Parquet in lake layout."""
    if fmt == "parquet":
        return f"{project}/event_date={hour:%Y-%m-%d}/event_hour={hour:%H}/part-00000.parquet"
    return hour_file_name(project, hour)
