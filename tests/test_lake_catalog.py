"""The commit log read side: records round-trip, ordering, cursors and per-hour object views."""

from __future__ import annotations

from pathlib import Path

from eventpipe_core.lake_catalog import (
    CommitRecord,
    LandedObject,
    commit_keys,
    committed_objects,
    iter_commit_records,
    last_commit,
)
from eventpipe_core.lake_store import LocalLakeStore


def _record(partition: int, seq: int, start: int, end: int, hours: list[tuple[str, str, int]]) -> CommitRecord:
    objects = tuple(
        LandedObject(f"raw/events/event_date={d}/event_hour={h}/p{partition}-{start}.parquet", d, h, n, 0, 1)
        for d, h, n in hours
    )
    return CommitRecord("events", partition, seq, start, end, objects, 0, "w1", records=end - start)


def test_records_round_trip_and_read_in_order(tmp_path: Path) -> None:
    lake = LocalLakeStore(tmp_path)
    recs = [
        _record(0, 0, 0, 10, [("2026-01-01", "00", 10)]),
        _record(0, 1, 10, 25, [("2026-01-01", "00", 5), ("2025-12-29", "07", 10)]),
        _record(1, 0, 0, 3, [("2026-01-01", "01", 3)]),
    ]
    for r in reversed(recs):
        assert lake.put_if_absent(r.key, r.to_json())
    assert CommitRecord.from_json(recs[1].to_json()) == recs[1]
    assert recs[1].rows_per_hour == {"2026-01-01-00:00": 5, "2025-12-29-07:00": 10}
    assert [r.seq for r in iter_commit_records(lake)] == [0, 1, 0]
    assert [(r.kafka_partition, r.seq) for r in iter_commit_records(lake, after={0: 0})] == [(0, 1), (1, 0)]
    assert last_commit(lake, 0).end_offset == 25
    assert last_commit(lake, 7) is None
    assert sorted(commit_keys(lake)) == [0, 1]
    hour = committed_objects(lake, "2026-01-01", "00")
    assert [o.rows for o in hour] == [10, 5]
    assert len(committed_objects(lake)) == 4
