"""Amplitude's request and event rules, as the HTTP V2 / Batch APIs apply them.

Everything here is pure (no I/O) so the bad-input corpus and the fuzz test can hammer it. The
error strings and body fields are the ones Amplitude answers with and that the official SDKs read
(``code``, ``error``, ``missing_field``, ``events_with_invalid_fields``,
``events_with_missing_fields``, ``events_with_invalid_id_lengths``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventpipe_core.event_model import (
    DEFAULT_MIN_ID_LENGTH,
    EVENT_FIELDS,
    FLOAT,
    INT,
    INVALID_IDS,
    MAX_NESTING_DEPTH,
    MAX_STRING_LENGTH,
    OBJECT,
    STRING,
    event_problems,
)

# --- limits (Amplitude's) --------------------------------------------------------------------
V2_MAX_EVENTS = 2000
V2_MAX_BYTES = 1024 * 1024
BATCH_MAX_BYTES = 20 * 1024 * 1024
# `time` before 2000-01-01 is almost always seconds sent as milliseconds (it would land in 1970).
MIN_EVENT_TIME_MS = 946_684_800_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Fields the official SDKs send that the shared model does not list; kept in the envelope.
EXTRA_EVENT_FIELDS: dict[str, str] = {"currency": STRING, "version_name": STRING, "ingestion_metadata": OBJECT}
KNOWN_FIELDS: dict[str, str] = EVENT_FIELDS | EXTRA_EVENT_FIELDS

# Event names Amplitude reserves for itself (HTTP V2 docs): rejected as invalid `event_type`.
RESERVED_EVENT_TYPES = frozenset(
    {
        "[Amplitude] Start Session", "[Amplitude] End Session", "[Amplitude] Revenue",
        "[Amplitude] Revenue (Verified)", "[Amplitude] Revenue (Unverified)", "[Amplitude] Merged User",
    }
)

# --- error strings (Amplitude's where Amplitude has one) --------------------------------------
ERR_MISSING_BODY = "Missing request body"
ERR_INVALID_JSON = "Invalid JSON request body"
ERR_MISSING_FIELD = "Request missing required field"
ERR_INVALID_EVENT_JSON = "Invalid event JSON"
ERR_INVALID_FIELDS = "Invalid field values on some events"
ERR_INVALID_ID_LENGTHS = "Invalid id length for user_id or device_id"
ERR_INVALID_OPTIONS = "Invalid options"
ERR_INVALID_KEY_PREFIX = "Invalid API key"  # full answer: "Invalid API key: <key>" (SDKs test the prefix)
ERR_PAYLOAD_TOO_LARGE = "Payload too large"
ERR_CONTENT_TYPE = "Invalid content type, expected application/json"
ERR_CONTENT_ENCODING = "Unsupported content encoding"
ERR_BAD_GZIP = "Invalid gzip request body"
ERR_THROTTLED = "Too many requests for some devices and users"
ERR_KEY_THROTTLED = "Too many requests for this API key"
ERR_PLAN = "Event properties violate the tracking plan"
ERR_UNAVAILABLE = "Service unavailable: events were not written, retry"
ERR_BODY_TIMEOUT = "Request timeout: the body did not arrive in time"
ERR_EVENT_TOO_LARGE = "Some events are larger than the broker's message limit"


@dataclass
class Rejection(Exception):
    """A request answered with a non-200 status; ``body`` is the exact JSON answer."""

    status: int
    body: dict[str, Any]
    reason: str  # metrics label (`events rejected by reason`)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


def error(status: int, message: str, reason: str, **extra: Any) -> Rejection:
    return Rejection(status, {"code": status, "error": message, **extra}, reason)


# --- transport ---------------------------------------------------------------------------------
def check_content_type(content_type: str | None) -> None:
    """Amplitude requires ``application/json`` (parameters such as charset are fine)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise error(400, ERR_CONTENT_TYPE, "content_type")


def decode_body(raw: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` with a cap on the decompressed size (no zip bombs)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise error(415, ERR_CONTENT_ENCODING, "content_encoding")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(raw, max_bytes + 1)
        if len(out) > max_bytes:
            raise error(413, ERR_PAYLOAD_TOO_LARGE, "payload_too_large")
        if not d.eof or d.unused_data:
            raise error(400, ERR_BAD_GZIP, "bad_encoding")
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError):
        raise error(400, ERR_BAD_GZIP, "bad_encoding") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text}")
    return value


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no numbers that overflow to infinity.

    orjson first (fast; integers beyond 64 bits become floats, as in a browser); what it refuses
    is parsed again by the standard library, whose answers define the rules — so a body with a lone
    surrogate escape still gets the per-event 400 naming the field, not "Invalid JSON".
    """
    if not body.strip():
        raise error(400, ERR_MISSING_BODY, "missing_body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error(400, ERR_INVALID_JSON, "invalid_json") from None


@dataclass
class UploadRequest:
    """The request-level fields of an upload (HTTP V2 / Batch shape)."""

    api_key: str
    events: list[Any]
    min_id_length: int = DEFAULT_MIN_ID_LENGTH


def parse_upload(payload: Any, header_key: str | None = None, *, allow_bare: bool = False) -> UploadRequest:
    """``{"api_key", "events", ["options": {"min_id_length"}]}``; with ``allow_bare`` (the /track
    endpoint) also one event object, a list of events, or ``{"event": {...}}``, with the API key in
    the body or the ``X-API-Key`` header."""
    if allow_bare:
        if isinstance(payload, list):
            payload = {"events": payload}
        elif isinstance(payload, dict) and "events" not in payload:
            if "event" in payload:
                payload = {k: v for k, v in payload.items() if k != "event"} | {"events": payload["event"]}
            elif "event_type" in payload:
                payload = {"events": [{k: v for k, v in payload.items() if k != "api_key"}], "api_key": payload.get("api_key")}
        if isinstance(payload, dict) and isinstance(payload.get("events"), dict):
            payload = payload | {"events": [payload["events"]]}
        if isinstance(payload, dict) and payload.get("api_key") is None and header_key:
            payload = payload | {"api_key": header_key}
    if not isinstance(payload, dict):
        raise error(400, ERR_INVALID_JSON, "invalid_json")
    api_key = payload.get("api_key")
    if not isinstance(api_key, str) or not api_key:
        raise error(400, ERR_MISSING_FIELD, "missing_field", missing_field="api_key")
    if not _string_ok(api_key):  # e.g. a lone surrogate: no key is like that (and SQLite cannot look it up)
        shown = api_key[:100].encode("utf-8", "backslashreplace").decode("utf-8")
        raise error(400, f"{ERR_INVALID_KEY_PREFIX}: {shown}", "invalid_api_key")
    events = payload.get("events")
    if events is None or events == []:
        raise error(400, ERR_MISSING_FIELD, "missing_field", missing_field="events")
    if not isinstance(events, list):
        raise error(400, ERR_INVALID_EVENT_JSON, "invalid_event_json")
    min_id_length = DEFAULT_MIN_ID_LENGTH
    options = payload.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise error(400, ERR_INVALID_OPTIONS, "invalid_options")
        mil = options.get("min_id_length")
        if mil is not None:
            if isinstance(mil, bool) or not isinstance(mil, int) or not 1 <= mil <= MAX_STRING_LENGTH:
                raise error(400, ERR_INVALID_OPTIONS, "invalid_options")
            min_id_length = mil
    return UploadRequest(api_key=api_key, events=events, min_id_length=min_id_length)


# --- events ------------------------------------------------------------------------------------
@dataclass
class EventErrors:
    """Index lists per field, exactly the maps of Amplitude's 400 body."""

    missing: dict[str, list[int]] = field(default_factory=dict)
    invalid: dict[str, list[int]] = field(default_factory=dict)
    id_lengths: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: dict[str, list[int]], name: str, index: int) -> None:
        indexes = kind.setdefault(name, [])
        if not indexes or indexes[-1] != index:
            indexes.append(index)

    def __bool__(self) -> bool:
        return bool(self.missing or self.invalid or self.id_lengths)

    def merge(self, other: EventErrors) -> None:
        """Add the index lists of a later chunk (its indexes are all greater)."""
        for mine, theirs in ((self.missing, other.missing), (self.invalid, other.invalid), (self.id_lengths, other.id_lengths)):
            for name, indexes in theirs.items():
                mine.setdefault(name, []).extend(indexes)

    def bad_indexes(self) -> set[int]:
        return {i for kind in (self.missing, self.invalid, self.id_lengths) for ids in kind.values() for i in ids}

    def rejection(self) -> Rejection:
        if self.missing:
            message, reason = ERR_MISSING_FIELD, "missing_event_field"
        elif self.invalid:
            message, reason = ERR_INVALID_FIELDS, "invalid_field"
        else:
            message, reason = ERR_INVALID_ID_LENGTHS, "invalid_id_length"
        body: dict[str, Any] = {"code": 400, "error": message}
        if self.missing:
            body["events_with_missing_fields"] = self.missing
        if self.invalid:
            body["events_with_invalid_fields"] = self.invalid
        if self.id_lengths:
            body["events_with_invalid_id_lengths"] = self.id_lengths
        return Rejection(400, body, reason)


def _string_ok(value: str) -> bool:
    if len(value) > MAX_STRING_LENGTH:
        return False
    if not value.isascii():
        try:
            value.encode("utf-8")  # lone surrogates (from "\ud800" escapes) cannot be stored
        except UnicodeEncodeError:
            return False
    return True


def _nested_ok(root: dict[str, Any]) -> bool:
    """Depth ≤ 40 (the property object itself is level 1), every key and string ≤ 1024 chars."""
    for k, v in root.items():  # fast path: a flat object of short ASCII strings and numbers
        if len(k) > MAX_STRING_LENGTH or not k.isascii():
            return _nested_ok_full(root)
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING_LENGTH or not v.isascii():
                return _nested_ok_full(root)
        elif t is dict or t is list:
            return _nested_ok_full(root)
    return True


def _nested_ok_full(root: Any) -> bool:
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_NESTING_DEPTH:
                return False
            for k, v in value.items():
                if not _string_ok(k):
                    return False
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_NESTING_DEPTH:
                return False
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and not _string_ok(value):
            return False
    return True


def _value_ok(name: str, kind: str, value: Any, now_ms: int, max_future_ms: int) -> bool:
    if kind == STRING:
        return isinstance(value, str) and _string_ok(value)
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
            return False
        if name == "time":
            return MIN_EVENT_TIME_MS <= value <= now_ms + max_future_ms
        return True
    if kind == FLOAT:
        return not isinstance(value, bool) and isinstance(value, int | float) and abs(value) < 1e300
    if kind == OBJECT:
        return isinstance(value, dict) and _nested_ok(value)
    return False


def generated_insert_id(project: str, event: dict[str, Any], occurrence: int = 0) -> str:
    """A deterministic insert_id for an event that came without one.

    Derived from the project and the event's content (identity, type, ``time``, properties — all of
    it, canonically serialised) and ``occurrence``, the number of identical events before it in the
    same request. A client re-sending a request after a 503, a lost answer or a partial write sends
    the same events again, gets the same ids, and downstream deduplication (by insert_id, as
    Amplitude's) drops the copies. The price: two byte-identical events without ``time`` nor
    ``insert_id`` sent in different requests are taken for one re-sent event — SDKs always send
    ``time``; send it (or an insert_id) to count such events separately.
    """
    try:
        canonical = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits (standard-library parse): exact text either way
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    digest = hashlib.sha1(b"%s\n%d\n%s" % (project.encode("utf-8"), occurrence, canonical), usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _insert_id_for(project: str, event: dict[str, Any], seen: dict[str, int]) -> str:
    first = generated_insert_id(project, event)
    occurrence = seen.get(first, 0)
    seen[first] = occurrence + 1
    return first if occurrence == 0 else generated_insert_id(project, event, occurrence)


def validate_events(
    events: list[Any], *, project: str, min_id_length: int, now_ms: int, max_future_ms: int, client_ip: str | None,
    index_offset: int = 0, seen: dict[str, int] | None = None,
) -> tuple[list[dict[str, Any]], EventErrors]:
    """Check every event; return the normalised events (only if none failed) and the index lists.

    Normalisation: unknown fields and nulls dropped, ``time`` defaults to the upload time,
    ``ip: "$remote"`` becomes the client IP, a missing ``insert_id`` is generated. Then the lake's
    own rule (:func:`eventpipe_core.event_model.event_problems`, e.g. ``insert_id: ""``) is applied,
    so no accepted event is dead-lettered by the landing consumer. A request validated in chunks
    passes each chunk's ``index_offset`` and one ``seen`` map (generated ids stay request-wide).
    """
    errors = EventErrors()
    out: list[dict[str, Any]] = []
    seen = {} if seen is None else seen  # generated id of an event -> identical events so far
    for i, raw in enumerate(events, index_offset):
        if not isinstance(raw, dict):
            errors.add(errors.invalid, "event", i)
            continue
        bad = False
        event: dict[str, Any] = {}
        for name, value in raw.items():
            kind = KNOWN_FIELDS.get(name)
            if kind is None or value is None:
                continue
            t = type(value)
            if kind is STRING and t is str:  # the common cases inline (same rules as _value_ok)
                ok = len(value) <= MAX_STRING_LENGTH and (value.isascii() or _string_ok(value))
            elif kind is OBJECT and t is dict:
                ok = _nested_ok(value)
            else:
                ok = _value_ok(name, kind, value, now_ms, max_future_ms)
            if not ok:
                errors.add(errors.invalid, name, i)
                bad = True
                continue
            event[name] = value
        etype = raw.get("event_type")
        if etype is None or etype == "":
            errors.add(errors.missing, "event_type", i)
            bad = True
        elif "event_type" in event and etype in RESERVED_EVENT_TYPES:
            errors.add(errors.invalid, "event_type", i)
            bad = True
        has_id = False
        for id_field in ("user_id", "device_id"):
            value = event.get(id_field)
            if value is None:
                if raw.get(id_field) is not None:
                    has_id = True  # present but of the wrong type: already reported as invalid
                continue
            has_id = True
            if value.lower() in INVALID_IDS:
                errors.add(errors.invalid, id_field, i)
                bad = True
            elif len(value) < min_id_length:
                errors.add(errors.id_lengths, id_field, i)
                bad = True
        if not has_id:
            errors.add(errors.missing, "device_id", i)
            bad = True
        if bad or errors:
            continue
        if "insert_id" not in event:  # from what the client sent: a re-send gets the same id
            event["insert_id"] = _insert_id_for(project, event, seen)
        if "time" not in event:
            event["time"] = now_ms
        if event.get("ip") == "$remote":
            if client_ip:
                event["ip"] = client_ip
            else:
                del event["ip"]
        problems = event_problems(event)  # what the landing consumer would dead-letter: refused here
        if problems:
            for name, _reason in problems:
                errors.add(errors.invalid, name, i)
            continue
        out.append(event)
    return (out if not errors else []), errors
