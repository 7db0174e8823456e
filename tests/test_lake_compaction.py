"""Lake compaction (enrichment.compaction): one object per (partition, hour), rows and enriched bytes unchanged.

Readers (read_raw_hour, committed_objects) apply compaction records; a late batch landed after a
compaction stays visible and a later generation folds it in; a lost race deletes its own object; a real
SIGKILL of a compacting subprocess at any point loses nothing, and a reader polling meanwhile never sees
a row twice or misses one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from enrichment.compaction import compact_group, compact_lake, compacted_written_ms, plan_compaction, vacuum
from enrichment.lake_io import read_raw_hour
from enrichment.rules import enrich_hour, to_parquet_bytes
from eventpipe_core.lake_catalog import RAW_PREFIX, CompactionRecord, committed_objects, iter_compaction_records
from eventpipe_core.lake_store import LakeStore, LocalLakeStore
from tests.orchestration_support import land_batch, raw_row

H0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def land(lake: LakeStore, hours: int, partitions: int, batches: int, rows: int, seq0: int = 0) -> dict[int, int]:
    """``batches`` batches per partition, each spread over ``hours`` hours (so one object per hour per batch)."""
    next_seq = {}
    for p in range(partitions):
        offset = seq0 * batches * rows * hours
        for b in range(batches):
            batch = [raw_row(f"p{p}-o{offset + i}", H0 + timedelta(hours=i % hours, minutes=(b * 7 + i) % 60),
                             device_id=f"dev-{(p * 13 + i) % 17:05d}", user_id="alice" if i % 11 == 0 else None)
                     for i in range(rows * hours)]
            if b % 3 == 0:
                batch.append(dict(batch[0]))  # a duplicate landed again: enrichment dedupes it, compaction keeps it
            land_batch(lake, batch, kafka_partition=p, seq=seq0 + b, start_offset=offset,
                       committed_at=H0 + timedelta(hours=hours, seconds=30 * b))
            offset += len(batch)
        next_seq[p] = seq0 + batches
    return next_seq


def snapshot(lake: LakeStore, hours: int) -> list[pa.Table]:
    """Every hour's visible rows in a canonical order (the multiset readers see)."""
    out = []
    for h in range(hours):
        t = read_raw_hour(lake, H0 + timedelta(hours=h))
        out.append(t.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")]))
    return out


def closed(hours: int) -> int:
    return int((H0 + timedelta(hours=hours)).timestamp() * 1000)


def test_compaction_keeps_rows_and_enriched_bytes(tmp_path: Path) -> None:
    lake = LocalLakeStore(tmp_path / "lake")
    land(lake, hours=3, partitions=2, batches=5, rows=4)
    before = snapshot(lake, 3)
    enriched = [to_parquet_bytes(enrich_hour(t, hour_start=H0 + timedelta(hours=h)).table) for h, t in enumerate(before)]
    assert len(committed_objects(lake)) == 3 * 2 * 5

    # only hours ended by the cut-off are compacted
    result = compact_lake(lake, closed_before_ms=closed(2))
    assert (result.groups, result.objects_replaced) == (4, 20)
    assert sum(1 for o in committed_objects(lake) if o.event_hour == "12") == 10
    compact_lake(lake, closed_before_ms=closed(3))
    visible = committed_objects(lake)
    assert len(visible) == 6 and all(compacted_written_ms(o.key) for o in visible)
    after = snapshot(lake, 3)
    assert after == before  # same rows, same ingested_at (commit time of each row's batch)
    for h, t in enumerate(after):
        assert to_parquet_bytes(enrich_hour(t, hour_start=H0 + timedelta(hours=h)).table) == enriched[h]

    # a late batch for a compacted hour stays visible beside it; the next generation folds it in
    land_batch(lake, [raw_row("late", H0 + timedelta(minutes=59), device_id="dev-late")], kafka_partition=0, seq=5,
               start_offset=10_000, committed_at=H0 + timedelta(hours=5))
    assert read_raw_hour(lake, H0).num_rows == before[0].num_rows + 1
    assert compact_lake(lake, closed_before_ms=closed(3)).groups == 1
    assert [(c.kafka_partition, c.generation) for c in iter_compaction_records(lake, "2026-03-01", "10")] == [
        (0, 0), (0, 1), (1, 0)]
    assert read_raw_hour(lake, H0).num_rows == before[0].num_rows + 1
    assert len(committed_objects(lake, "2026-03-01", "10")) == 2

    # replaced objects stay until the retention period has passed, then go; readers do not notice
    raw_objects = [k for k in lake.list(RAW_PREFIX) if not k.startswith("raw/events/_")]
    assert vacuum(lake, retain_s=3600).replaced_deleted == 0
    v = vacuum(lake, retain_s=0)
    assert v.replaced_deleted == len(raw_objects) - 6 and v.orphans_deleted == 0
    assert len([k for k in lake.list(RAW_PREFIX) if not k.startswith("raw/events/_")]) == 6
    final = snapshot(lake, 3)
    assert final[1:] == before[1:] and final[0].num_rows == before[0].num_rows + 1


def test_lost_race_deletes_its_object(tmp_path: Path) -> None:
    lake = LocalLakeStore(tmp_path / "lake")
    land(lake, hours=1, partitions=1, batches=3, rows=3)
    before = snapshot(lake, 1)
    [group] = plan_compaction(lake, closed_before_ms=closed(1))
    record = compact_group(lake, group, "a")
    assert record is not None and CompactionRecord.from_json(record.to_json()) == record
    assert compact_group(lake, group, "b") is None  # same generation: the conditional create fails
    assert [o.key for o in committed_objects(lake)] == [r.object.key for r in iter_compaction_records(lake)]
    compacted = [k for k in lake.list(RAW_PREFIX) if compacted_written_ms(k)]
    assert len(compacted) == 1  # the loser removed its own object
    assert snapshot(lake, 1) == before
    assert plan_compaction(lake, closed_before_ms=closed(1)) == []  # one object left: nothing to do


COMPACTOR = textwrap.dedent("""
    import sys
    from eventpipe_core.lake_store import LocalLakeStore
    from enrichment.compaction import compact_lake
    lake = LocalLakeStore(__import__("pathlib").Path(sys.argv[1]))
    print("ready", flush=True)
    compact_lake(lake, closed_before_ms=int(sys.argv[2]), on_group=lambda g, r: print("group", flush=True))
    print("done", flush=True)
""")


def test_sigkill_mid_compaction_loses_nothing_and_readers_stay_exact(tmp_path: Path) -> None:
    lake = LocalLakeStore(tmp_path / "lake")
    hours = 6
    land(lake, hours=hours, partitions=2, batches=6, rows=3)
    before = snapshot(lake, hours)
    groups = len(plan_compaction(lake, closed_before_ms=closed(hours)))
    assert groups == hours * 2

    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:  # polls while compactors run and die: always exactly the same rows
        while not stop.is_set():
            got = snapshot(lake, hours)
            seen.append("ok" if got == before else "DIFFERENT")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    rng = random.Random(17)
    kills, partial = 0, 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for _ in range(12):
            proc = subprocess.Popen([sys.executable, "-c", COMPACTOR, str(lake.root), str(closed(hours))], env=env,
                                    stdout=subprocess.PIPE, text=True, start_new_session=True)
            try:
                assert proc.stdout.readline().strip() == "ready"
                lines = rng.randrange(0, 3)
                for _ in range(lines):
                    if proc.stdout.readline().strip() != "group":
                        break
                time.sleep(rng.random() * 0.05)  # land somewhere inside the next group: reading, writing, committing
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    kills += 1
            finally:
                proc.wait(timeout=60)
                proc.stdout.close()
            assert snapshot(lake, hours) == before
            done = len(list(iter_compaction_records(lake)))
            partial += 0 < done < groups
            if done == groups:
                break
    finally:
        stop.set()
        thread.join(timeout=120)
    assert kills >= 1 and partial >= 1
    assert seen and set(seen) == {"ok"}, f"{seen.count('DIFFERENT')} of {len(seen)} reads differed"
    compact_lake(lake, closed_before_ms=closed(hours))  # what the killed runs left
    assert len(committed_objects(lake)) == groups
    assert snapshot(lake, hours) == before
    vacuum(lake, retain_s=0)  # orphans of killed attempts and replaced objects go
    leftovers = [k for k in lake.list(RAW_PREFIX) if not k.startswith("raw/events/_")]
    assert sorted(leftovers) == sorted(o.key for o in committed_objects(lake))
    assert snapshot(lake, hours) == before


def test_dagster_asset_compacts_closed_hours_and_vacuums(tmp_path: Path) -> None:
    import dagster as dg

    from eventpipe_core.settings import load_settings
    from orchestration.lake.compaction import build_compaction
    from orchestration.resources import LakeResource

    lake = LocalLakeStore(tmp_path / "lake")
    land(lake, hours=2, partitions=2, batches=3, rows=2)  # hours of 2026: long closed
    before = snapshot(lake, 2)
    settings = load_settings(eventpipe_home=tmp_path, lake_url=lake.url, lake_compaction_retain_s=0)
    asset, schedule = build_compaction(settings)
    assert schedule.cron_schedule == "15 * * * *"
    result = dg.materialize([asset], resources={"lake": LakeResource(lake_url=lake.url)})
    assert result.success
    meta = result.asset_materializations_for_node("raw_events_compaction")[0].metadata
    assert (meta["groups"].value, meta["objects_replaced"].value, meta["replaced_deleted"].value) == (4, 12, 12)
    assert len(committed_objects(lake)) == 4 and snapshot(lake, 2) == before
