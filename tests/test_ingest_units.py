"""The landing parts on their own: decoding/partitioning, object names, the lake commit log,
cleanup, and the flush step's conflict and ambiguous-commit paths."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import event, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from eventpipe_core.event_model import JSON_COLUMNS, RAW_EVENT_SCHEMA
from eventpipe_core.lake_catalog import CommitRecord, LandedObject, commit_key, iter_commit_records
from eventpipe_core.lake_store import LocalLakeStore
from eventpipe_core.settings import Settings
from ingest_consumer.cleanup import delete_orphans
from ingest_consumer.commit_log import ForeignLogError, PartitionLog
from ingest_consumer.consumer import LandingConsumer
from ingest_consumer.partitioner import new_attempt_id, object_key, parse_object_key
from ingest_consumer.writer import BufferedRecord, decode_records
from tests.ingest_support import BASE_MS, create_topics, envelope


def _rec(offset: int, value: bytes | None) -> BufferedRecord:
    return BufferedRecord(offset, b"k", value, 0)


def test_decode_splits_by_event_hour_and_rejects_with_reasons() -> None:
    huge = envelope(3).replace(b'"time"', b'"session_id":99999999999999999999,"time"')  # beyond int64
    records = [_rec(i, envelope(i, hours=2, n=4)) for i in range(4)] + [
        _rec(4, None), _rec(5, b"\xff\xfe"), _rec(6, b'{"v":1,"event":{"event_type":"x","time":1}}'), _rec(7, huge),
    ]
    out = decode_records(records, partition=2, chunk_rows=3)
    assert sorted(out.hours) == [("2026-01-01", "00"), ("2026-01-01", "01")]
    assert [h.rows for _, h in sorted(out.hours.items())] == [2, 2]
    table = out.hours[("2026-01-01", "01")].table()
    assert table.column("kafka_offset").to_pylist() == [2, 3] and set(table.column("kafka_partition").to_pylist()) == {2}
    reasons = {r.record.offset: r.reason for r in out.rejected}
    assert sorted(reasons) == [4, 5, 6, 7]
    assert "tombstone" in reasons[4] and reasons[5].startswith("undecodable JSON")
    assert "insert_id" in reasons[6] and "session_id out of range" in reasons[7]


def test_object_names_round_trip_and_foreign_names_are_ignored() -> None:
    attempt = new_attempt_id(BASE_MS)
    key = object_key("2026-01-01", "07", 3, 100, 250, attempt)
    assert key.startswith("raw/events/event_date=2026-01-01/event_hour=07/p00003-o000000000100-000000000250-")
    name = parse_object_key(key)
    assert name is not None
    assert (name.kafka_partition, name.start_offset, name.end_offset, name.written_ms) == (3, 100, 250, BASE_MS)
    assert name.attempt_id == attempt
    assert parse_object_key("raw/events/event_date=2026-01-01/event_hour=07/somebody-else.parquet") is None
    assert parse_object_key("enriched/events/" + key.rsplit("/", 1)[1]) is None


def _record(plog: PartitionLog, start: int, end: int, writer: str, attempt: str = "a") -> CommitRecord:
    return CommitRecord("t", plog.kafka_partition, plog.next_seq, start, end, (), 0, writer, records=end - start,
                        extra={"attempt": attempt})


def test_commit_log_one_writer_wins_each_seq_and_the_loser_follows(tmp_path: Path) -> None:
    lake = LocalLakeStore(tmp_path)
    a, b = PartitionLog.load(lake, "t", 0), PartitionLog.load(lake, "t", 0)
    assert (a.next_seq, a.end_offset) == (0, None)
    assert a.try_commit(_record(a, 0, 10, "A"))
    assert not b.try_commit(_record(b, 0, 12, "B"))  # same seq: refused
    b.refresh()
    assert (b.next_seq, b.end_offset) == (1, 10)
    with pytest.raises(AssertionError):
        b.try_commit(_record(b, 11, 20, "B"))  # must start exactly at the committed end
    assert b.try_commit(_record(b, 10, 20, "B"))
    assert not a.try_commit(_record(a, 10, 15, "A"))
    assert (PartitionLog.load(lake, "t", 0).next_seq, PartitionLog.load(lake, "t", 0).end_offset) == (2, 20)
    # ambiguous create: the stored record is ours only with our attempt id
    c = PartitionLog.load(lake, "t", 0)
    rec = _record(c, 20, 30, "C", attempt="x1")
    assert c.resolve(rec) is None
    assert lake.put_if_absent(rec.key, rec.to_json())
    assert PartitionLog.load(lake, "t", 0).resolve(rec) is True
    other = PartitionLog(lake, "t", 0, next_seq=2, end_offset=20)
    assert other.resolve(_record(other, 20, 30, "C", attempt="x2")) is False
    with pytest.raises(ForeignLogError):
        PartitionLog.load(lake, "another-topic", 0)


def test_cleanup_deletes_only_old_uncommitted_landing_objects(tmp_path: Path) -> None:
    lake = LocalLakeStore(tmp_path)
    now = int(time.time() * 1000)
    old, young = now - 10_000_000, now - 1000
    committed = object_key("2026-01-01", "00", 0, 0, 5, new_attempt_id(old))
    orphan = object_key("2026-01-01", "00", 0, 0, 7, new_attempt_id(old))
    fresh = object_key("2026-01-01", "00", 0, 5, 9, new_attempt_id(young))
    foreign = "raw/events/event_date=2026-01-01/event_hour=00/manual.parquet"
    for k in (committed, orphan, fresh, foreign):
        lake.put(k, b"x")
    rec = CommitRecord("t", 0, 0, 0, 5, (LandedObject(committed, "2026-01-01", "00", 5, 0, 1),), 0, "w", records=5)
    lake.put_if_absent(rec.key, rec.to_json())
    tmp = tmp_path / "raw/events/event_date=2026-01-01/event_hour=00/.p.parquet.abc.tmp"
    tmp.write_bytes(b"partial")
    os.utime(tmp, (time.time() - 7200, time.time() - 7200))
    result = delete_orphans(lake, grace_s=3600)
    assert (result.orphans_deleted, result.temp_files_deleted) == (1, 1)
    assert not lake.exists(orphan) and not tmp.exists()
    assert all(lake.exists(k) for k in (committed, fresh, foreign))


class FlakyCommitLake(LocalLakeStore):
    """Stores a commit record and then raises, once: the reply was lost (a timeout after the write)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.fail_next = True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        stored = super().put_if_absent(key, data)
        if self.fail_next and "_commits/" in key:
            self.fail_next = False
            raise ConnectionError("reply lost")
        return stored


@pytest.fixture()
def landing(settings: Settings, tmp_path: Path):  # noqa: ANN201
    topic, dlq = create_topics(settings, partitions=1)
    s = settings.model_copy(update={"kafka_events_topic": topic, "kafka_dlq_topic": dlq, "consumer_assign_partitions": "0",
                                    "kafka_consumer_group": f"g-{topic}"})
    consumer = LandingConsumer(s, lake=FlakyCommitLake(tmp_path / "lake"))
    consumer._connect()
    consumer._init_pending()
    yield consumer
    consumer._close()


def test_flush_resolves_an_ambiguous_commit_as_its_own(landing: LandingConsumer) -> None:
    state = landing.parts[0]
    for i in range(10):
        state.add(_rec(i, envelope(i)))
    assert landing._flush(state)
    records = list(iter_commit_records(landing.lake))
    assert [(r.seq, r.start_offset, r.end_offset, r.writer_id) for r in records] == [(0, 0, 10, landing.writer_id)]
    assert all(landing.lake.exists(o.key) for o in records[0].objects)
    assert landing.metrics.lake_retries.labels("commit")._value.get() == 1
    assert (state.expected, state.buffer, state.log.next_seq) == (10, [], 1)


def test_flush_that_loses_its_seq_deletes_its_objects_and_resumes_at_the_winner(landing: LandingConsumer) -> None:
    lake = landing.lake
    lake.fail_next = False
    winner = CommitRecord(landing.topic, 0, 0, 0, 4, (), 0, "other-writer", records=4)
    assert lake.put_if_absent(commit_key(0, 0), winner.to_json())
    state = landing.parts[0]  # positioned before the other writer committed: still believes seq 0
    assert state.log.next_seq == 0
    for i in range(10):
        state.add(_rec(i, envelope(i)))
    assert not landing._flush(state)
    assert (state.expected, state.buffer, state.log.next_seq, state.log.end_offset) == (4, [], 1, 4)
    assert not [k for k in lake.list("raw/events/") if parse_object_key(k)]  # the losing attempt's objects are gone
    assert landing.metrics.commit_conflicts._value.get() == 1


def _reference(records: list[BufferedRecord], partition: int) -> tuple[dict, dict]:
    """Rows per (date, hour) and reasons per offset by the per-record reference decoder."""
    import pyarrow as pa

    from eventpipe_core.event_model import InvalidEnvelope, envelope_to_row, hour_partition

    rows: dict = {}
    reasons: dict = {}
    for r in records:
        try:
            if r.value is None:
                raise InvalidEnvelope("tombstone")
            row = envelope_to_row(r.value, partition, r.offset)
            rows_to_check = pa.Table.from_pylist([row], schema=RAW_EVENT_SCHEMA)  # representable?
            del rows_to_check
        except (InvalidEnvelope, pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            reasons[r.offset] = str(exc)
            continue
        rows.setdefault(hour_partition(row["event_time"]), []).append(row)
    return rows, reasons


def _normalise(row: dict) -> dict:
    import json

    return {k: (json.loads(v) if k in JSON_COLUMNS + ("plan_violations",) and v is not None else v) for k, v in row.items()}


json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=6)
props = st.dictionaries(st.text(max_size=5), st.recursive(json_leaf, lambda x: st.lists(x, max_size=3)
                                                           | st.dictionaries(st.text(max_size=4), x, max_size=3), max_leaves=6),
                        max_size=4)
field_values = {
    "insert_id": st.sampled_from(["a", "", None, 5]), "event_type": st.sampled_from(["view", "", None]),
    "device_id": st.sampled_from(["device-1", None, "", 7]), "user_id": st.sampled_from(["user-1", None, 12345]),
    "time": st.sampled_from([BASE_MS, BASE_MS + 3_599_999, BASE_MS + 3_600_000, BASE_MS + 0.5, -5, "x", None, 10**20, True]),
    "session_id": st.sampled_from([None, -1, BASE_MS, 1.5, 2**63, "s"]), "price": st.sampled_from([None, 9.99, 1, "p", True]),
    "quantity": st.sampled_from([None, 2, 2.7]), "event_properties": props | st.none(), "user_properties": props | st.none(),
    "platform": st.sampled_from([None, "Web", 5, "ü😀", "\ud800"]), "groups": st.none() | props,
}


@given(st.lists(st.fixed_dictionaries({}, optional=field_values) | st.just("garbage") | st.just("tombstone"),
                min_size=1, max_size=25),
       st.sampled_from([3, 8192]))
@hsettings(max_examples=150, deadline=None)
def test_bulk_decode_agrees_with_the_reference_decoder(events: list, chunk_rows: int) -> None:
    """The landing's bulk (column-wise) decoder lands the same rows in the same hours, and rejects the
    same records, as the per-record reference envelope_to_row."""
    import json

    records = []
    for i, e in enumerate(events):
        if e == "tombstone":
            value = None
        elif e == "garbage":
            value = b"{not json"
        else:
            e = {"insert_id": f"i{i}", "event_type": "view", "device_id": "device-1", "time": BASE_MS + i * 600_000} | e
            e = {k: v for k, v in e.items() if v is not None or i % 3}  # explicit nulls sometimes
            envelope = {"v": 1, "event": e, "project": "demo", "received_at": BASE_MS, "client_ip": "203.0.113.9",
                        "upload_id": "u", "plan_violations": ["x"] if i % 2 else []}
            value = json.dumps(envelope).encode()  # ensure_ascii: surrogates travel as escapes
        records.append(BufferedRecord(i, b"k", value, 0))
    out = decode_records(records, partition=1, chunk_rows=chunk_rows)
    ref_rows, ref_reasons = _reference(records, 1)
    got = {hour: [_normalise(r) for r in h.table().to_pylist()] for hour, h in out.hours.items()}
    want = {hour: [_normalise(r) for r in rows] for hour, rows in ref_rows.items()}
    assert got == want
    assert {r.record.offset for r in out.rejected} == set(ref_reasons)
    landed = sum(len(rows) for rows in want.values())
    note(f"{landed} landed, {len(ref_reasons)} rejected")
    event(f"landed {'some' if landed else 'none'}")


def _slow_path(records: list[BufferedRecord], partition: int, chunk_rows: int) -> tuple[dict, dict]:
    """Every record through the general decoder (parse, the shared rule ``parse_envelope``, Arrow
    column by column) — the only path before the msgspec fast path."""
    from ingest_consumer import writer

    hours: dict = {}
    rejected: list = []
    for start in range(0, len(records), chunk_rows):
        writer._decode_chunk_bulk(records[start:start + chunk_rows], partition, hours, rejected)
    return ({k: v.table().to_pylist() for k, v in hours.items() if v.rows},
            {r.record.offset: r.reason for r in rejected})


# Raw JSON tokens per field, hostile included: numbers as strings, floats where integers go, bools,
# beyond int64 / float range, lone surrogates, empty strings, non-object property maps, NaN.
_HOSTILE = {
    "insert_id": ['"a"', '""', "5", "null", '"\\ud800"', '"é"'],
    "event_type": ['"view"', '""', "true", '"x\\u0000y"'],
    "device_id": ['"device-1"', '""', "7", "null", "0"],
    "user_id": ['"user-1"', "12345", "null", '""', "{}"],
    "time": [str(BASE_MS), str(BASE_MS + 3_600_000), f"{BASE_MS}.0", f"{BASE_MS}.5", "-5", "1e20", '"1"', "true",
             "99999999999999999999", "-62135596800001", "253402300799999"],
    "session_id": ["null", "-1", "9223372036854775807", "9223372036854775808", "1.5", '"s"', "false"],
    "price": ["null", "9.99", "1", "1e400", "-1e400", '"p"', "true"],
    "quantity": ["2", "2.0", "2.7", "-9223372036854775809"],
    "event_properties": ['{"b":1,"a":[1,2,{"d":null,"c":"ü"}]}', '{"a":[1,2,{"c":"ü","d":null}],"b":1.5}',
                         "{}", "null", "[1,2]", '"text"', "3",
                         '{"big":123456789012345678901234567890}', '{"inf":1e400}', '{"a" : 1 , "a":2}', "NaN"],
    "groups": ['{"org":["x"]}', '{"org": ["x"]}', '{"a":"\\u00e9"}', "null", '{"\\ud83d\\ude00":1}'],
    "platform": ['"Web"', "5", '"\\ud800"', "null", '"ü😀"'],
}
_ENVELOPE_TOKENS = {
    "v": ["1", "1.0", "true", "2", '"1"'], "project": ['"demo"', "null", "3"],
    "received_at": [str(BASE_MS), f"{BASE_MS}.0", '"x"', "1e300"], "client_ip": ['"203.0.113.9"', "null", "7"],
    "upload_id": ['"u"', "5", "null"], "plan_violations": ["[]", '["x"]', "null", '"no"', '[1]', '{"a":1}'],
}


def type_prefix(reason: str) -> str:
    """'UnicodeEncodeError: ' of a 'not representable …: UnicodeEncodeError: …' reason."""
    rest = reason.removeprefix("not representable in the lake schema: ")
    return rest.split(": ", 1)[0] + ": " if rest != reason else ""


@st.composite
def _hostile_value(draw: st.DrawFn) -> bytes:
    def obj(tokens: dict, extra: dict) -> str:
        keys = draw(st.lists(st.sampled_from(sorted(tokens)), max_size=len(tokens) + 2))  # repeats = duplicate keys
        parts = [f'"{k}":{draw(st.sampled_from(tokens[k]))}' for k in keys]
        parts += [f'"{k}":{v}' for k, v in extra.items() if draw(st.booleans()) or k not in keys]
        draw(st.randoms()).shuffle(parts)
        sep = draw(st.sampled_from([",", ", ", " ,\n"]))
        return "{" + sep.join(parts) + "}"

    event = obj(_HOSTILE, {"insert_id": '"i"', "event_type": '"view"', "device_id": '"d-1"', "time": str(BASE_MS)})
    env = obj(_ENVELOPE_TOKENS, {"v": "1", "project": '"demo"', "received_at": str(BASE_MS), "event": event})
    return draw(st.sampled_from([env, env, env, " " + env + "\n", env + "x", env[:-1], "[" + env + "]"])).encode()


@given(st.lists(_hostile_value(), min_size=1, max_size=30), st.sampled_from([4, 8192]))
@hsettings(max_examples=300, deadline=None)
def test_fast_decode_lands_and_rejects_exactly_like_the_old_bulk_decoder(values: list[bytes], chunk_rows: int) -> None:
    """The msgspec fast path is an accelerator only: on hostile raw JSON (duplicate keys, numbers as
    strings, out-of-range numbers, surrogates, odd envelopes) every record lands byte for byte as the
    orjson + parse_envelope decoder lands it, or is dead-lettered with that decoder's reason (the
    shared rule event_problems decides); rows agree with the per-record reference too."""
    records = [BufferedRecord(i, b"k", v, 0) for i, v in enumerate(values)]
    out = decode_records(records, partition=3, chunk_rows=chunk_rows)
    got = {k: v.table().to_pylist() for k, v in out.hours.items()}
    slow_rows, slow_reasons = _slow_path(records, 3, chunk_rows)
    assert got == slow_rows  # same JSON text, same types, same order
    reasons = {r.record.offset: r.reason for r in out.rejected}
    assert reasons == slow_reasons
    ref_rows, ref_reasons = _reference(records, 3)
    assert set(reasons) == set(ref_reasons)  # the shared rule's reasons, word for word (Arrow's, prefixed)
    assert all(r == ref_reasons[o] or r == f"not representable in the lake schema: {type_prefix(r)}{ref_reasons[o]}"
               for o, r in reasons.items()), (reasons, ref_reasons)
    if not any(b'"inf":1e400' in v or b'"event_properties":NaN' in v for v in values):
        # (non-finite numbers inside a property map are written as null, json.dumps writes Infinity)
        assert {h: [_ms(_normalise(r)) for r in rows] for h, rows in got.items()} == \
            {h: [_ms(_normalise(r)) for r in rows] for h, rows in ref_rows.items()}
    event(f"{sum(map(len, got.values()))} landed of {len(values)}")


def _ms(row: dict) -> dict:
    """Timestamps as epoch ms, rounded: the reference builds datetimes from ``ms / 1000`` (a float),
    which is microseconds off near year 9999 where the lake's integer milliseconds are exact."""
    from datetime import UTC, datetime, timedelta

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {k: round((v - epoch) / timedelta(milliseconds=1)) if isinstance(v, datetime) else v for k, v in row.items()}


def test_a_batch_decoded_as_it_fills_equals_the_batch_decoded_at_once(tmp_path: Path) -> None:
    """The loop decodes whole CHUNK_ROWS chunks as records arrive; the flushed result (rows per hour,
    in order, and dead letters) is the same as decoding the whole batch at the flush."""
    from ingest_consumer.consumer import PartitionState
    from ingest_consumer.writer import CHUNK_ROWS
    from tests.ingest_support import POISON

    n = 2 * CHUNK_ROWS + 1234
    records = [_rec(i, POISON[i % 3] if i % 997 == 5 else envelope(i, hours=3, n=n)) for i in range(n)]
    state = PartitionState(PartitionLog.load(LocalLakeStore(tmp_path / "lake"), "t", 0), None)
    for start in range(0, n, 3000):  # polls of 3000
        chunk = records[start:start + 3000]
        state.extend(chunk, 0, chunk[0].offset, chunk[-1].offset)
        state.predecode(0)
    assert len(state.decoded) == 2 and len(state.buffer) == 1234 and state.count == n
    got, want = state.take_decoded(0), decode_records(records, 0)
    assert {h: d.table().to_pylist() for h, d in got.hours.items()} == {h: d.table().to_pylist() for h, d in want.hours.items()}
    assert [(r.record.offset, r.reason) for r in got.rejected] == [(r.record.offset, r.reason) for r in want.rejected]
    assert len(got.rejected) == len([i for i in range(n) if i % 997 == 5])
