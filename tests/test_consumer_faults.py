"""Exactly once under faults: SIGKILL at random moments, a member joining and leaving, two writers
holding the same partitions at once (the zombie case Tansu's group coordination produces)."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from eventpipe_core.lake_catalog import iter_commit_records
from eventpipe_core.lake_store import LocalLakeStore
from eventpipe_core.settings import Settings
from ingest_consumer.cleanup import delete_orphans
from tests.ingest_support import (
    Coord,
    assert_exactly_once,
    committed_keys,
    consumer_env,
    create_topics,
    dlq_coordinates,
    end_offsets,
    landed_keys,
    log_text,
    produce,
    start_consumer,
    stop,
    wait_landed,
)


class Producing(threading.Thread):
    """Produce in the background, so faults hit a live stream."""

    def __init__(self, settings: Settings, topic: str, n: int, poison_every: int = 0, pace_s: float = 0.0):
        super().__init__(daemon=True)
        self.args = (settings, topic, n, poison_every)
        self.pace_s = pace_s
        self.good: set[Coord] = set()
        self.bad: set[Coord] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            settings, topic, n, poison_every = self.args
            self.good, self.bad = produce(settings, topic, n, poison_every=poison_every, pace_s=self.pace_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc

    def result(self, timeout: float = 300) -> tuple[set[Coord], set[Coord]]:
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish"
        if self.error:
            raise self.error
        return self.good, self.bad


def _writers(records: list) -> set[str]:
    return {r.writer_id for r in records}


@pytest.mark.slow
def test_sigkill_at_random_moments_lands_exactly_once(settings: Settings, service_env: dict[str, str], tmp_path: Path) -> None:
    topic, dlq = create_topics(settings)
    lake = LocalLakeStore(tmp_path / "lake")
    env = consumer_env(service_env, topic, dlq, lake.url, consumer_flush_records=3000)
    log = tmp_path / "consumer.log"
    rng = random.Random(20260101)
    # Paced (~160 s) so the stream outlives the 11 incarnations: each must be killed mid-landing.
    producing = Producing(settings, topic, 200_000, poison_every=997, pace_s=0.8)
    producing.start()
    kills = 0
    progress: list[int] = []
    t0 = time.monotonic()
    while kills < 11:
        before = len(list(lake.list("raw/events/_commits/")))
        proc = start_consumer(env, log)
        deadline = time.monotonic() + 120
        while len(list(lake.list("raw/events/_commits/"))) == before:  # wait until this incarnation lands
            assert proc.poll() is None and time.monotonic() < deadline, log_text(log)[-3000:]
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 3.0))  # then kill at a random moment of its landing
        assert proc.poll() is None, log_text(log)[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        progress.append(len(list(lake.list("raw/events/_commits/"))))
    good, bad = producing.result()
    proc = start_consumer(env, log)
    try:
        wait_landed(lake, end_offsets(good | bad), timeout=240, procs=[proc])
    finally:
        assert stop(proc) == 0, log_text(log)[-3000:]
    elapsed = time.monotonic() - t0

    records = assert_exactly_once(lake, topic, good, bad)
    assert len(good | bad) == 200_000 and len(bad) == 200
    assert progress == sorted(set(progress)), f"every killed incarnation had landed batches: {progress}"
    assert len(_writers(records)) >= 5, "several killed incarnations committed batches"
    counts, _ = dlq_coordinates(settings, dlq)
    assert set(counts) == bad
    # leftovers of killed attempts are invisible (not committed) and removed by cleanup
    orphans = landed_keys(lake) - committed_keys(records)
    result = delete_orphans(lake, grace_s=0)
    assert result.orphans_deleted == len(orphans)
    assert landed_keys(lake) == committed_keys(records)
    print(f"\n200k events, {kills} SIGKILLs, {len(records)} batches, {len(orphans)} orphans cleaned, {elapsed:.0f}s")


def test_two_writers_on_the_same_partitions_land_exactly_once(
    settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> None:
    """Both processes are assigned all partitions (no group coordination): every seq is raced.

    Both start behind a barrier (positioned on every partition before anything is produced), with
    small flush thresholds; rounds of records are produced until each writer has won some batches
    and lost some races (one writer can win a whole round by chance), then exactly-once is checked
    over everything."""
    topic, dlq = create_topics(settings)
    lake = LocalLakeStore(tmp_path / "lake")
    env = consumer_env(service_env, topic, dlq, lake.url, consumer_assign_partitions="0,1,2,3",
                       consumer_flush_records=400, consumer_flush_age_s=0.2)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_consumer(env, logs[0]), start_consumer(env, logs[1])]
    good: set[Coord] = set()
    bad: set[Coord] = set()
    by_pid = {str(p.pid) for p in procs}
    winners: set[str] = set()
    conflicts = rounds = 0
    try:
        deadline = time.monotonic() + 90
        while not all(log_text(x).count("resumes at lake offset") >= 4 for x in logs):  # the barrier
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                log_text(logs[0])[-2000:] + log_text(logs[1])[-2000:]
            time.sleep(0.1)
        while rounds < 15 and not (winners == by_pid and conflicts > 0):
            g, b = produce(settings, topic, 5000, poison_every=500, start=rounds * 5000)
            good, bad = good | g, bad | b
            wait_landed(lake, end_offsets(good | bad), timeout=120, procs=procs)
            winners = {w.split("-")[-2] for w in _writers(list(iter_commit_records(lake)))}
            conflicts = sum(log_text(x).count("was committed by another writer") for x in logs)
            rounds += 1
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0], log_text(logs[0])[-2000:] + log_text(logs[1])[-2000:]
    assert winners == by_pid, f"after {rounds} rounds only {winners} of {by_pid} won batches"
    assert conflicts > 0, "the writers must have raced for the same seq"
    records = assert_exactly_once(lake, topic, good, bad)
    counts, _ = dlq_coordinates(settings, dlq)
    assert set(counts) == bad  # dead letters at least once; commit records have them exactly once
    assert landed_keys(lake) >= committed_keys(records)
    delete_orphans(lake, grace_s=0)
    assert landed_keys(lake) == committed_keys(records)
    dups = sum(counts.values()) - len(counts)
    print(f"\n{rounds} rounds, {len(records)} batches, {conflicts} lost races, DLQ duplicates {dups}")


def test_a_member_joining_and_leaving_mid_stream_lands_exactly_once(
    settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> None:
    topic, dlq = create_topics(settings)
    lake = LocalLakeStore(tmp_path / "lake")
    env = consumer_env(service_env, topic, dlq, lake.url, consumer_flush_records=1000)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    producing = Producing(settings, topic, 60_000, pace_s=0.6)
    producing.start()
    a = start_consumer(env, logs[0])
    b = None
    try:
        time.sleep(5)
        b = start_consumer(env, logs[1])
        deadline = time.monotonic() + 90
        while str(b.pid) not in {w.split("-")[-2] for w in _writers(list(iter_commit_records(lake)))}:
            assert time.monotonic() < deadline, "the joining member never landed a batch:\n" + log_text(logs[1])[-3000:]
            assert b.poll() is None, log_text(logs[1])[-3000:]
            time.sleep(0.5)
        time.sleep(2)
        assert producing.is_alive(), "the second member must leave mid-stream"
        assert stop(b) == 0, log_text(logs[1])[-3000:]  # SIGTERM: flush, commit, leave the group
        good, bad = producing.result()
        wait_landed(lake, end_offsets(good), timeout=180, procs=[a])
    finally:
        assert stop(a) == 0, log_text(logs[0])[-3000:]
        if b is not None:
            stop(b)
    records = assert_exactly_once(lake, topic, good)
    assert "leaving the group" in log_text(logs[1])
    assert a.pid != b.pid and {str(a.pid), str(b.pid)} == {w.split("-")[-2] for w in _writers(records)}
    a_log = log_text(logs[0])
    print(f"\n{len(records)} batches; member A: {a_log.count('assigned partitions')} assignments, "
          f"{a_log.count('revoked')} revocations, {a_log.count('was committed by another writer')} lost races")
