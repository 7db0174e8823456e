"""The one event model shared by the collector, the landing consumer and enrichment.

* ``EVENT_FIELDS`` — Amplitude HTTP V2 field set and each field's kind (what the collector validates);
* the Kafka **envelope** — what the collector produces to topic ``events`` (one JSON object):

  .. code-block:: json

     {"v": 1,
      "event": {...the Amplitude event, validated and normalised, always with insert_id...},
      "project": "demo", "received_at": 1767225600000, "client_ip": "203.0.113.9",
      "upload_id": "6f0c…", "plan_violations": ["event_properties.plan: …"]}

* ``RAW_EVENT_SCHEMA`` — the Arrow schema of landed Parquet rows (``raw/events/…``): typed columns,
  property maps as JSON strings, server fields, and the Kafka coordinates of each row;
* :func:`envelope_to_row` — envelope -> row, raising :class:`InvalidEnvelope` (dead-letter reason).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

ENVELOPE_VERSION = 1

# Amplitude semantics (DESIGN §7).
INVALID_IDS = frozenset(
    {
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", "", "0", "-1",
        "00000000-0000-0000-0000-000000000000", "{}", "lmy47d",
    }
)
DEFAULT_MIN_ID_LENGTH = 5
MAX_STRING_LENGTH = 1024
MAX_NESTING_DEPTH = 40

STRING, INT, FLOAT, OBJECT = "string", "int", "float", "object"

# field -> kind. `time` is epoch milliseconds; property maps are JSON objects.
EVENT_FIELDS: dict[str, str] = {
    "user_id": STRING, "device_id": STRING, "event_type": STRING, "time": INT,
    "event_properties": OBJECT, "user_properties": OBJECT, "groups": OBJECT, "group_properties": OBJECT,
    "app_version": STRING, "platform": STRING, "os_name": STRING, "os_version": STRING,
    "device_brand": STRING, "device_manufacturer": STRING, "device_model": STRING, "carrier": STRING,
    "country": STRING, "region": STRING, "city": STRING, "dma": STRING, "language": STRING,
    "location_lat": FLOAT, "location_lng": FLOAT, "ip": STRING,
    "price": FLOAT, "quantity": INT, "revenue": FLOAT, "productId": STRING, "revenueType": STRING,
    "insert_id": STRING, "event_id": INT, "session_id": INT, "library": STRING, "user_agent": STRING,
    "idfa": STRING, "idfv": STRING, "adid": STRING, "android_id": STRING, "plan": OBJECT, "partner_id": STRING,
}

# Amplitude field name -> lake column name where they differ.
COLUMN_NAMES = {"time": "event_time", "productId": "product_id", "revenueType": "revenue_type"}

_TS = pa.timestamp("ms", tz="UTC")

RAW_EVENT_SCHEMA = pa.schema(
    [
        pa.field("insert_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_time", _TS, nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("session_id", pa.int64()),
        pa.field("event_id", pa.int64()),
        pa.field("event_properties", pa.string()),
        pa.field("user_properties", pa.string()),
        pa.field("groups", pa.string()),
        pa.field("group_properties", pa.string()),
        pa.field("app_version", pa.string()),
        pa.field("platform", pa.string()),
        pa.field("os_name", pa.string()),
        pa.field("os_version", pa.string()),
        pa.field("device_brand", pa.string()),
        pa.field("device_manufacturer", pa.string()),
        pa.field("device_model", pa.string()),
        pa.field("carrier", pa.string()),
        pa.field("country", pa.string()),
        pa.field("region", pa.string()),
        pa.field("city", pa.string()),
        pa.field("dma", pa.string()),
        pa.field("language", pa.string()),
        pa.field("location_lat", pa.float64()),
        pa.field("location_lng", pa.float64()),
        pa.field("ip", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("quantity", pa.int64()),
        pa.field("revenue", pa.float64()),
        pa.field("product_id", pa.string()),
        pa.field("revenue_type", pa.string()),
        pa.field("library", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("project", pa.string(), nullable=False),
        pa.field("received_at", _TS, nullable=False),
        pa.field("client_ip", pa.string()),
        pa.field("upload_id", pa.string()),
        pa.field("plan_violations", pa.string()),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
)

JSON_COLUMNS = ("event_properties", "user_properties", "groups", "group_properties")
INT_COLUMNS = ("session_id", "event_id", "quantity")
FLOAT_COLUMNS = ("location_lat", "location_lng", "price", "revenue")
_FIELD_OF = {col: name for name, col in COLUMN_NAMES.items()}
# (event field, integer column?) of the numeric columns
_NUMERIC_FIELDS = tuple((_FIELD_OF.get(c, c), c in INT_COLUMNS) for c in INT_COLUMNS + FLOAT_COLUMNS)
_NUMERIC_IS_INT = dict(_NUMERIC_FIELDS)
_NUMERIC_NAMES = frozenset(_NUMERIC_IS_INT)
_NUMERIC_ORDER = {name: i for i, (name, _) in enumerate(_NUMERIC_FIELDS)}


class InvalidEnvelope(ValueError):
    """A Kafka record that cannot become a lake row; the message is the dead-letter reason."""


def event_key(event: dict[str, Any]) -> bytes | None:
    """Kafka key: device_id, else user_id — keeps one device's events ordered in one partition."""
    key = event.get("device_id") or event.get("user_id")
    return str(key).encode() if key else None


def make_envelope(
    event: dict[str, Any], *, project: str, received_at_ms: int, client_ip: str | None,
    upload_id: str, plan_violations: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "v": ENVELOPE_VERSION, "event": event, "project": project, "received_at": received_at_ms,
        "client_ip": client_ip, "upload_id": upload_id, "plan_violations": plan_violations or [],
    }


def encode_envelope(envelope: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON with keys sorted at every level (orjson; the standard library for integers
    beyond 64 bits). Sorted keys make each property map's bytes already the lake's JSON text
    (``json_text``), so the landing consumer stores the slice instead of re-serialising it."""
    try:
        return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True).encode()


def _ms_to_datetime(value: Any, field: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEnvelope(f"{field} is not epoch milliseconds: {value!r}")
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidEnvelope(f"{field} out of range: {value!r}") from exc


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _opt_num(value: Any, kind: type, field: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEnvelope(f"{field} is not a number: {value!r}")
    return kind(value)


# Bounds of what a lake row can hold (Arrow int64, datetime's years 1..9999).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MIN_TIME_MS, MAX_TIME_MS = -62_135_596_800_000, 253_402_300_799_999


def _is_number(value: Any) -> bool:
    t = type(value)
    if t is int:
        return True
    if t is float:
        return math.isfinite(value)
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def event_problems(event: dict[str, Any]) -> list[tuple[str, str]]:
    """Why the lake cannot take this event, as ``(field, reason)`` pairs; empty if it can.

    The one rule shared by both ends (issue 18): the landing consumer dead-letters an envelope whose
    event has a problem (the first reason is the dead-letter reason), and the collector runs the same
    function on every normalised event and answers 400 naming the field — so nothing the collector
    acknowledges can be dead-lettered later. Rules: ``insert_id`` and ``event_type`` non-empty
    strings; a truthy ``user_id`` or ``device_id``; ``time`` a finite number of epoch ms within
    datetime's years 1..9999; numeric columns finite numbers (not booleans), integer columns within
    int64. (The collector's own rules are stricter, e.g. ``time`` ≥ 2000-01-01; those are policy, not
    what the lake can hold.)
    """
    problems: list[tuple[str, str]] = []
    for required in ("insert_id", "event_type"):
        value = event.get(required)
        if type(value) is not str or not value:
            problems.append((required, f"event.{required} missing or not a string"))
    if not (event.get("user_id") or event.get("device_id")):
        problems.append(("device_id", "event has neither user_id nor device_id"))
    t = event.get("time")
    if type(t) is not int or not MIN_TIME_MS <= t <= MAX_TIME_MS:  # fast path: an int in range
        if not _is_number(t):
            problems.append(("time", f"event.time is not epoch milliseconds: {t!r}"))
        elif not MIN_TIME_MS <= int(t) <= MAX_TIME_MS:
            problems.append(("time", f"event.time out of range: {t!r}"))
    present = _NUMERIC_NAMES.intersection(event)  # only the numeric fields present (usually few)
    for field in sorted(present, key=_NUMERIC_ORDER.__getitem__) if present else ():
        value = event[field]
        if value is None:
            continue
        is_int = _NUMERIC_IS_INT[field]
        if not _is_number(value):
            problems.append((field, f"{field} is not a number: {value!r}"))
        elif is_int and not INT64_MIN <= int(value) <= INT64_MAX:
            problems.append((field, f"{field} out of range: {value!r}"))
    return problems


def parse_envelope(envelope: Any) -> dict[str, Any]:
    """Check a decoded envelope; return its event or raise :class:`InvalidEnvelope` (the reason)."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("event"), dict):
        raise InvalidEnvelope("not an envelope: missing object field 'event'")
    if envelope.get("v") != ENVELOPE_VERSION:
        raise InvalidEnvelope(f"unsupported envelope version {envelope.get('v')!r}")
    event = envelope["event"]
    problems = event_problems(event)
    if problems:
        raise InvalidEnvelope(problems[0][1])
    if not isinstance(envelope.get("project"), str):
        raise InvalidEnvelope("envelope.project missing")
    received = envelope.get("received_at")
    if not _is_number(received) or not MIN_TIME_MS <= int(received) <= MAX_TIME_MS:
        raise InvalidEnvelope(f"envelope.received_at is not epoch milliseconds: {received!r}")
    return event


def envelope_to_row(raw: bytes, partition: int, offset: int) -> dict[str, Any]:
    """Decode one Kafka record value into a lake row (RAW_EVENT_SCHEMA column order).

    The per-record reference decoder: the landing consumer's bulk decoder must agree with it.
    """
    try:
        envelope = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEnvelope(f"undecodable JSON: {exc}") from exc
    event = parse_envelope(envelope)

    row: dict[str, Any] = {}
    for field in RAW_EVENT_SCHEMA.names:
        row[field] = None
    for name in EVENT_FIELDS:
        col = COLUMN_NAMES.get(name, name)
        if col not in row or col == "event_time":
            continue
        value = event.get(name)
        if col in JSON_COLUMNS:
            row[col] = json_text(value)
        elif col in INT_COLUMNS:
            row[col] = _opt_num(value, int, name)
        elif col in FLOAT_COLUMNS:
            row[col] = _opt_num(value, float, name)
        else:
            row[col] = as_text(value)
    row["event_time"] = _ms_to_datetime(event.get("time"), "event.time")
    row["project"] = envelope["project"]
    row["received_at"] = _ms_to_datetime(envelope.get("received_at"), "envelope.received_at")
    row["client_ip"] = as_text(envelope.get("client_ip"))
    row["upload_id"] = as_text(envelope.get("upload_id"))
    violations = envelope.get("plan_violations") or []
    row["plan_violations"] = json_text(violations) if violations else None
    row["kafka_partition"] = partition
    row["kafka_offset"] = offset
    return row


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA)


def hour_partition(ts: datetime) -> tuple[str, str]:
    """(event_date, event_hour) of a UTC timestamp: the lake's partition values."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%d"), ts.strftime("%H")
