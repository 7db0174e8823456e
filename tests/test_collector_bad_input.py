"""Bad-input corpus (every case: its documented status and exact body) and a fuzz test (never 5xx)."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collector.app import create_app
from collector.validation import KNOWN_FIELDS, validate_events
from eventpipe_core.event_model import (
    INVALID_IDS,
    InvalidEnvelope,
    encode_envelope,
    envelope_to_row,
    event_problems,
    make_envelope,
    rows_to_table,
)
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import ServerThread, collector_settings, collector_store, new_project

__all__ = ["collector_store"]

KEY = "@KEY@"  # replaced by the test's valid API key
REVOKED = "@REVOKED@"
OK = {"user_id": "user-12345", "event_type": "ok"}
JSON = {"Content-Type": "application/json"}

INVALID_JSON = {"code": 400, "error": "Invalid JSON request body"}
MISSING_BODY = {"code": 400, "error": "Missing request body"}
INVALID_EVENT_JSON = {"code": 400, "error": "Invalid event JSON"}
INVALID_OPTIONS = {"code": 400, "error": "Invalid options"}
TOO_LARGE = {"code": 413, "error": "Payload too large"}
BAD_CONTENT_TYPE = {"code": 400, "error": "Invalid content type, expected application/json"}


def missing_field(name: str) -> dict[str, Any]:
    return {"code": 400, "error": "Request missing required field", "missing_field": name}


def invalid(field_name: str, *idx: int) -> dict[str, Any]:
    return {"code": 400, "error": "Invalid field values on some events",
            "events_with_invalid_fields": {field_name: list(idx or (1,))}}


def missing(field_name: str, *idx: int) -> dict[str, Any]:
    return {"code": 400, "error": "Request missing required field",
            "events_with_missing_fields": {field_name: list(idx or (1,))}}


def short(field_name: str) -> dict[str, Any]:
    return {"code": 400, "error": "Invalid id length for user_id or device_id",
            "events_with_invalid_id_lengths": {field_name: [1]}}


@dataclass
class Case:
    name: str
    body: bytes | Any  # bytes are sent as they are; anything else as JSON
    status: int
    expected: dict[str, Any]
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    path: str = "/2/httpapi"

    def content(self, key: str, revoked: str) -> bytes:
        raw = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return raw.replace(KEY.encode(), key.encode()).replace(REVOKED.encode(), revoked.encode())


def with_event(bad: Any, **request: Any) -> dict[str, Any]:
    """A request whose event #1 is ``bad`` (event #0 is valid)."""
    return {"api_key": KEY, "events": [OK, bad], **request}


def ev(**fields: Any) -> dict[str, Any]:
    return {**OK, **fields}


def nested(depth: int) -> dict[str, Any]:
    """A property object nested ``depth`` levels deep (the object itself is level 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def _cases() -> Iterator[Case]:
    valid = json.dumps(with_event(OK)).encode()
    # --- malformed / truncated JSON, invalid UTF-8, NaN/Infinity ------------------------------
    for i, raw in enumerate([
        b"{", b'{"api_key": "k", "events": [}', b"not json", b"{'api_key': 'k'}", b'{"a": 1,}', b"[1, 2",
        b"nul", b'{"api_key": "k"} {"x": 1}', b'// comment\n{"api_key": "k"}', b'{"api_key": "k", "events": [1,]}',
        b'{"api_key": "k" "events": []}', b'{"api_key": k}', b"\x00\x01\x02", b'{"a": "\\x41"}', b'{"a": 01}',
    ]):
        yield Case(f"malformed-{i}", raw, 400, INVALID_JSON)
    for cut in (1, 10, 25, 40, 60, len(valid) // 2, len(valid) - 2, len(valid) - 1):
        yield Case(f"truncated-at-{cut}", valid[:cut], 400, INVALID_JSON)
    for name, literal in [("nan", "NaN"), ("inf", "Infinity"), ("-inf", "-Infinity"), ("1e999", "1e999"),
                          ("-1e999", "-1e999")]:
        raw = json.dumps(with_event(ev(price=0))).replace('"price": 0', f'"price": {literal}').encode()
        yield Case(f"number-{name}", raw, 400, INVALID_JSON)
    for name, raw in [
        ("invalid-utf8", b'{"api_key": "@KEY@", "events": [{"user_id": "user-\xff\xfe", "event_type": "e"}]}'),
        ("overlong-utf8", b'{"api_key": "@KEY@", "events": [{"user_id": "user-\xc0\xaf", "event_type": "e"}]}'),
        ("utf16", json.dumps(with_event(OK)).encode("utf-16")),
        ("bom", b"\xef\xbb\xbf" + valid),
        ("deep-json-arrays", b"[" * 200_000 + b"]" * 200_000),
        ("huge-int-literal", b'{"api_key": "@KEY@", "events": [{"user_id": "user-12345", "event_type": "e", "time": '
         + b"9" * 5000 + b"}]}"),
    ]:
        yield Case(name, raw, 400, INVALID_JSON)
    yield Case("deep-json-objects", b'{"a":' * 30_000 + b"1" + b"}" * 30_000, 400, INVALID_JSON)
    yield Case("empty-body", b"", 400, MISSING_BODY)
    yield Case("whitespace-body", b"  \n ", 400, MISSING_BODY)
    # --- request shape ------------------------------------------------------------------------
    for name, body in [("list", [OK]), ("string", "x"), ("number", 5), ("null", None), ("true", True)]:
        yield Case(f"top-level-{name}", body, 400, INVALID_JSON)
    yield Case("empty-object", {}, 400, missing_field("api_key"))
    yield Case("no-api-key", {"events": [OK]}, 400, missing_field("api_key"))
    for name, value in [("int", 123), ("empty", ""), ("null", None), ("list", ["k"]), ("object", {"k": 1})]:
        yield Case(f"api-key-{name}", {"api_key": value, "events": [OK]}, 400, missing_field("api_key"))
    yield Case("no-events", {"api_key": KEY}, 400, missing_field("events"))
    yield Case("events-empty", {"api_key": KEY, "events": []}, 400, missing_field("events"))
    yield Case("events-null", {"api_key": KEY, "events": None}, 400, missing_field("events"))
    for name, value in [("string", "x"), ("object", OK), ("number", 5), ("true", True)]:
        yield Case(f"events-{name}", {"api_key": KEY, "events": value}, 400, INVALID_EVENT_JSON)
    for name, value in [("string", "x"), ("list", [5])]:
        yield Case(f"options-{name}", with_event(OK, options=value), 400, INVALID_OPTIONS)
    for name, value in [("zero", 0), ("negative", -1), ("string", "5"), ("float", 1.5), ("bool", True), ("huge", 5000)]:
        yield Case(f"min-id-length-{name}", with_event(OK, options={"min_id_length": value}), 400, INVALID_OPTIONS)
    # --- keys ---------------------------------------------------------------------------------
    yield Case("unknown-key", {"api_key": "nope-not-a-key", "events": [OK]}, 400,
               {"code": 400, "error": "Invalid API key: nope-not-a-key"})
    yield Case("revoked-key", {"api_key": REVOKED, "events": [OK]}, 400, {"code": 400, "error": f"Invalid API key: {REVOKED}"})
    yield Case("unknown-key-batch", {"api_key": "other-bad-key", "events": [OK]}, 400,
               {"code": 400, "error": "Invalid API key: other-bad-key"}, path="/batch")
    # --- content type and encoding ------------------------------------------------------------
    for name, ctype in [("none", None), ("text", "text/plain"), ("form", "application/x-www-form-urlencoded"),
                        ("multipart", "multipart/form-data; boundary=x"), ("xml", "application/xml"), ("bare-json", "json")]:
        headers = {} if ctype is None else {"Content-Type": ctype}
        yield Case(f"content-type-{name}", valid, 400, BAD_CONTENT_TYPE, headers=headers)
    yield Case("encoding-br", valid, 415, {"code": 415, "error": "Unsupported content encoding"},
               headers=JSON | {"Content-Encoding": "br"})
    yield Case("gzip-not-gzipped", valid, 400, {"code": 400, "error": "Invalid gzip request body"},
               headers=JSON | {"Content-Encoding": "gzip"})
    yield Case("gzip-truncated", gzip.compress(valid)[:-12], 400, {"code": 400, "error": "Invalid gzip request body"},
               headers=JSON | {"Content-Encoding": "gzip"})
    yield Case("gzip-garbage-after", gzip.compress(valid) + b"xx", 400, {"code": 400, "error": "Invalid gzip request body"},
               headers=JSON | {"Content-Encoding": "gzip"})
    yield Case("gzip-bomb", gzip.compress(b" " * (2 * 1024 * 1024) + valid), 413, TOO_LARGE,
               headers=JSON | {"Content-Encoding": "gzip"})
    yield Case("deflate-bomb", zlib.compress(b" " * (2 * 1024 * 1024) + valid), 413, TOO_LARGE,
               headers=JSON | {"Content-Encoding": "deflate"})
    # --- sizes --------------------------------------------------------------------------------
    big = {"api_key": KEY, "events": [ev(event_properties={"p": "x" * 1000}) for _ in range(1100)]}
    yield Case("v2-over-1mb", big, 413, TOO_LARGE)
    yield Case("track-over-1mb", big, 413, TOO_LARGE, path="/track")
    yield Case("v2-2001-events", {"api_key": KEY, "events": [OK] * 2001}, 413, TOO_LARGE)
    yield Case("track-2001-events", [OK] * 2001, 413, TOO_LARGE, path="/track", headers=JSON | {"X-API-Key": KEY})
    yield Case("batch-over-20mb", b'{"api_key": "' + b"k" * (21 * 1024 * 1024) + b'"}', 413, TOO_LARGE, path="/batch")
    # --- events: not objects, required fields -------------------------------------------------
    for name, value in [("number", 5), ("string", "x"), ("null", None), ("list", [OK])]:
        yield Case(f"event-is-{name}", with_event(value), 400, invalid("event"))
    yield Case("no-event-type", with_event({"user_id": "user-12345"}), 400, missing("event_type"))
    yield Case("empty-event-type", with_event(ev(event_type="")), 400, missing("event_type"))
    yield Case("null-event-type", with_event(ev(event_type=None)), 400, missing("event_type"))
    yield Case("number-event-type", with_event(ev(event_type=5)), 400, invalid("event_type"))
    yield Case("reserved-event-type", with_event(ev(event_type="[Amplitude] Revenue")), 400, invalid("event_type"))
    yield Case("long-event-type", with_event(ev(event_type="e" * 1025)), 400, invalid("event_type"))
    yield Case("no-ids", with_event({"event_type": "e"}), 400, missing("device_id"))
    yield Case("null-ids", with_event({"event_type": "e", "user_id": None, "device_id": None}), 400, missing("device_id"))
    yield Case("two-bad-events", {"api_key": KEY, "events": [OK, {"event_type": "e"}, OK, {"event_type": "e"}]}, 400,
               missing("device_id", 1, 3))
    # --- invalid and short IDs ----------------------------------------------------------------
    for bad_id in sorted(INVALID_IDS) + ["NULL", "Undefined", "N/A", "LMY47D"]:
        yield Case(f"invalid-user-id-{bad_id!r}", with_event({"event_type": "e", "user_id": bad_id}), 400, invalid("user_id"))
    for bad_id in ["null", "00000000-0000-0000-0000-000000000000", "unknown"]:
        yield Case(f"invalid-device-id-{bad_id}", with_event({"event_type": "e", "device_id": bad_id}), 400,
                   invalid("device_id"))
    yield Case("short-user-id", with_event({"event_type": "e", "user_id": "abcd"}), 400, short("user_id"))
    yield Case("short-device-id", with_event({"event_type": "e", "device_id": "x1"}), 400, short("device_id"))
    yield Case("short-with-min-id-length", with_event({"event_type": "e", "user_id": "ab"}, options={"min_id_length": 3}),
               400, short("user_id"))
    # --- wrong types --------------------------------------------------------------------------
    wrong = [
        ("user_id", 12345), ("device_id", True), ("time", "2024-01-01T00:00:00Z"), ("time", 1.7e12), ("time", True),
        ("session_id", "abc"), ("session_id", 1.5), ("event_id", "1"), ("quantity", 1.5), ("price", "9.99"),
        ("revenue", True), ("location_lat", "37.7"), ("event_properties", "x"), ("event_properties", [1]),
        ("user_properties", 5), ("groups", "g"), ("platform", 5), ("insert_id", 5), ("ip", 127), ("library", {}),
        ("app_version", 1.0), ("session_id", 2**63), ("event_id", -(2**63) - 1), ("price", 1e301),
    ]
    for name, value in wrong:
        yield Case(f"wrong-type-{name}-{value!r}"[:80], with_event(ev(**{name: value})), 400, invalid(name))
    now = int(time.time() * 1000)
    for name, value in [("negative", -1), ("far-future", now + 3 * 86_400_000), ("year-5138", 10**14),
                        ("seconds-not-ms", now // 1000), ("zero", 0), ("1999-12-31", 946_684_799_999)]:
        yield Case(f"time-{name}", with_event(ev(time=value)), 400, invalid("time"))
    # --- what the landing consumer would dead-letter is refused here (event_model.event_problems) --
    yield Case("empty-insert-id", with_event(ev(insert_id="")), 400, invalid("insert_id"))
    yield Case("empty-insert-id-batch", with_event(ev(insert_id="")), 400, invalid("insert_id"), path="/batch")
    yield Case("empty-insert-id-track", ev(insert_id=""), 400, invalid("insert_id", 0), path="/track",
               headers=JSON | {"X-API-Key": KEY})
    # --- oversized strings, deep nesting, lone surrogates ------------------------------------
    yield Case("lone-surrogate-api-key", b'{"api_key": "k\\ud800", "events": [{"user_id": "user-12345", "event_type": "e"}]}',
               400, {"code": 400, "error": "Invalid API key: k\\ud800"})
    yield Case("lone-surrogate-api-key-batch", b'{"api_key": "\\udfff", "events": [{"user_id": "user-12345", '
               b'"event_type": "e"}]}',
               400, {"code": 400, "error": "Invalid API key: \\udfff"}, path="/batch")
    yield Case("long-platform", with_event(ev(platform="p" * 1025)), 400, invalid("platform"))
    yield Case("long-user-id", with_event(ev(user_id="u" * 1025)), 400, invalid("user_id"))
    yield Case("long-property-value", with_event(ev(event_properties={"k": "v" * 1025})), 400, invalid("event_properties"))
    yield Case("long-property-key", with_event(ev(event_properties={"k" * 1025: 1})), 400, invalid("event_properties"))
    yield Case("long-nested-user-property", with_event(ev(user_properties={"$set": {"a": ["x", "y" * 2000]}})), 400,
               invalid("user_properties"))
    yield Case("nesting-41", with_event(ev(event_properties=nested(41))), 400, invalid("event_properties"))
    yield Case("nesting-41-groups", with_event(ev(groups=nested(41))), 400, invalid("groups"))
    list_nest: Any = 1
    for _ in range(41):
        list_nest = [list_nest]
    yield Case("nesting-41-lists", with_event(ev(event_properties={"l": list_nest})), 400, invalid("event_properties"))
    surrogate = '{"api_key": "@KEY@", "events": [{"user_id": "user-12345", "event_type": "ok"}, %s]}'
    yield Case("lone-surrogate-event-type", (surrogate % '{"user_id": "user-12345", "event_type": "\\ud800"}').encode(),
               400, invalid("event_type"))
    yield Case("lone-surrogate-property", (surrogate % '{"user_id": "user-12345", "event_type": "e", '
                                           '"event_properties": {"k": "\\udfff"}}').encode(), 400, invalid("event_properties"))
    yield Case("lone-surrogate-key", (surrogate % '{"user_id": "user-12345", "event_type": "e", '
                                      '"event_properties": {"\\ud800": 1}}').encode(), 400, invalid("event_properties"))
    # --- the same rules on /batch and /track ---------------------------------------------------
    yield Case("batch-invalid-id", with_event({"event_type": "e", "user_id": "null"}), 400, invalid("user_id"), path="/batch")
    yield Case("batch-missing-type", with_event({"user_id": "user-12345"}), 400, missing("event_type"), path="/batch")
    yield Case("track-bare-bad-event", {"event_type": "e", "user_id": "nil"}, 400, invalid("user_id", 0), path="/track",
               headers=JSON | {"X-API-Key": KEY})
    yield Case("track-list-short-id", [OK, {"event_type": "e", "user_id": "abc"}], 400, short("user_id"), path="/track",
               headers=JSON | {"X-API-Key": KEY})
    yield Case("track-no-key", OK, 400, missing_field("api_key"), path="/track")
    yield Case("track-malformed", b"{", 400, INVALID_JSON, path="/track")


CASES = list(_cases())


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def api(settings: Settings, collector_store: MetadataStore) -> Iterator[tuple[ServerThread, str, str]]:
    _, key = new_project(collector_store, "bad")
    _, revoked = new_project(collector_store, "bad")
    collector_store.revoke_key(revoked)
    # generous rate limits: the corpus is about validation, not throttling
    cfg = collector_settings(settings, collector_key_rps=100_000, collector_v2_eps=100_000, collector_batch_eps=100_000)
    server = ServerThread(create_app(cfg, store=collector_store)).start()
    yield server, key, revoked
    server.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(api: tuple[ServerThread, str, str], case: Case) -> None:
    server, key, revoked = api
    content = case.content(key, revoked)
    headers = {k: v.replace(KEY, key) for k, v in case.headers.items()}
    r = httpx.post(f"{server.url}{case.path}", content=content, headers=headers, timeout=60)
    expected = json.loads(json.dumps(case.expected).replace(REVOKED, revoked))
    assert (r.status_code, r.json()) == (case.status, expected)


def test_boundaries_are_accepted(api: tuple[ServerThread, str, str]) -> None:
    """The other side of each limit: exactly at it is fine."""
    server, key, _ = api
    events = [
        ev(event_properties=nested(40)), ev(platform="p" * 1024), ev(user_id="u" * 1024),
        {"event_type": "e", "user_id": "abc"}, ev(time=946_684_800_000), ev(session_id=-1), ev(price=-1.5, quantity=2),
        ev(event_type="ünïcødé ✓", event_properties={"emoji": "😀"}),
    ]
    r = httpx.post(f"{server.url}/2/httpapi", json={"api_key": key, "events": events, "options": {"min_id_length": 3}})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{server.url}/2/httpapi", json={"api_key": key, "events": [OK] * 2000}, timeout=60)
    assert r.status_code == 200 and r.json()["events_ingested"] == 2000, r.text


# --- fuzz ------------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                                      max_size=4), max_leaves=12)
field_names = st.sampled_from(sorted(KNOWN_FIELDS)) | st.text(max_size=10)
id_values = st.sampled_from(["user-12345", "device-123", "null", "abc", "", "x" * 1025]) | json_scalars
events_st = st.lists(
    st.dictionaries(field_names, json_values, max_size=6).flatmap(
        lambda d: st.fixed_dictionaries(
            {"user_id": id_values, "event_type": st.sampled_from(["e", "", "x" * 2000]) | json_scalars}
        ).map(lambda required: {**d, **required})
    ) | json_values,
    max_size=5,
)


def _payload(key: str) -> st.SearchStrategy[bytes]:
    structured = st.fixed_dictionaries(
        {"api_key": st.sampled_from([key, "wrong"]) | json_scalars, "events": events_st | json_values},
        optional={"options": st.fixed_dictionaries({}, optional={"min_id_length": json_scalars}) | json_values},
    ).map(lambda d: json.dumps(d).encode())
    mangled = structured.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))
    return structured | mangled | st.binary(max_size=200)


@pytest.mark.timeout(600)
def test_fuzz_never_5xx(api: tuple[ServerThread, str, str]) -> None:
    server, key, _ = api
    client = httpx.Client(base_url=server.url, timeout=60)

    @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=_payload(key), path=st.sampled_from(["/2/httpapi", "/batch", "/track"]),
           ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]),
           gz=st.booleans())
    def run(body: bytes, path: str, ctype: str, gz: bool) -> None:
        headers = {"Content-Type": ctype}
        if gz:
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        r = client.post(path, content=body, headers=headers)
        assert r.status_code < 500, (r.status_code, r.text)
        answer = r.json()
        assert answer["code"] == r.status_code
        if r.status_code == 200:
            assert answer["events_ingested"] >= 1

    try:
        run()
    finally:
        client.close()


@hsettings(max_examples=200, deadline=None)
@given(events=st.lists(json_values | st.dictionaries(field_names, json_values), max_size=6),
       min_id_length=st.integers(1, 10))
def test_fuzz_validation_never_raises(events: list[Any], min_id_length: int) -> None:
    out, errors = validate_events(events, project="p", min_id_length=min_id_length, now_ms=1_700_000_000_000,
                                  max_future_ms=86_400_000, client_ip="192.0.2.1")
    assert not (out and errors)  # all or nothing
    if not errors:
        assert len(out) == len(events)
    for i, event in enumerate(out):  # every accepted event is a complete, encodable event...
        assert event["insert_id"] and isinstance(event["time"], int) and event["event_type"]
        json.dumps(event, allow_nan=False).encode("utf-8")
        # ...that the landing consumer turns into a lake row: nothing accepted is dead-lettered later
        raw = encode_envelope(make_envelope(event, project="p", received_at_ms=1_700_000_000_000, client_ip=None,
                                            upload_id="u"))
        rows_to_table([envelope_to_row(raw, 0, i)])


@pytest.mark.parametrize("field_name, value", [
    ("insert_id", ""), ("insert_id", 5), ("event_type", ""), ("time", -(10**17)), ("time", "1"), ("session_id", 2**63),
    ("quantity", "2"), ("price", True), ("location_lat", float("inf")),
])
def test_one_rule_what_the_consumer_dead_letters_the_collector_refuses(field_name: str, value: Any) -> None:
    """event_model.event_problems is the consumer's dead-letter rule; the collector refuses the same
    events (400 naming the field) — checked here on both sides for each kind of problem."""
    event = {"insert_id": "i-1", "event_type": "e", "user_id": "user-12345", "time": 1_767_225_600_000, field_name: value}
    assert [f for f, _ in event_problems(event)] == [field_name]
    raw = json.dumps(make_envelope(event, project="p", received_at_ms=1_767_225_600_000, client_ip=None, upload_id="u"))
    with pytest.raises(InvalidEnvelope):
        envelope_to_row(raw.encode(), 0, 0)
    out, errors = validate_events([event], project="p", min_id_length=5, now_ms=1_767_225_600_000,
                                  max_future_ms=86_400_000, client_ip=None)
    assert not out and (errors.invalid | errors.missing) == {field_name: [0]}  # Amplitude: "" event_type is missing
