"""Idempotent hour loads into ``analytics.events`` and the identity map.

An hour is loaded into a fresh staging table, then swapped in with one
``ALTER TABLE … REPLACE PARTITION ID '<hour>' FROM staging`` — atomic for readers: they see the
old hour or the new one, never a partial or doubled hour, however often the hour is re-loaded.
The enriched Parquet file is sent as-is (``FORMAT Parquet``): no row conversion in Python. Measured
side by side (``bench/clickhouse_load.py``, 200k rows, embedded server): this body upload runs at the
speed of the server reading the same file itself (``INSERT … SELECT FROM file()``, ratio 1.0), while
``insert_arrow`` (``FORMAT Arrow``) reached 0.74 of it and clickhouse-connect's ``FORMAT Native`` 0.68
— so Parquet stays the load format.

Day partitions (``CLICKHOUSE_PARTITION=day``, the single-server default): the unit of replacement stays the hour, but
the swap is of the hour's day — the day's other hours copied from the table plus the staged hours, in one
``REPLACE PARTITION`` — under the day's lock, which live appends take too (:func:`day_lock`), so writers of
different hours of one day never drop each other's rows. Each load rewrites its day: fine up to tens of
millions of events a day, not at the rates hourly partitions take (``CLICKHOUSE_PARTITION=hour``).

Copies (``event_copies``, the rule readers rely on to skip deduplicating everything else): an insert_id
with rows in more than one hour must be listed in ``event_copies``, with the actor of each of its rows,
while those rows are readable. So a load lists the staged hour's insert_ids that ``events`` holds in
*other* hours (and any repeated within the staged rows) **before** the swap: a crash between the listing
and the swap leaves at most a listed id without a copy (harmless, only deduplicated for nothing), never an
unlisted copy. It lists again after the swap: two hours loaded concurrently each probe before the other's
swap, and the later of the two after-swap probes sees the other hour. Listing is idempotent
(ReplacingMergeTree on the row) and never removed, so re-loading an hour neither invents nor loses entries.

Ties (``event_ties``: actors with two events of one ``event_time``, whose insert_ids order them) are listed
the same way, before and after the swap: ties share an hour, so a listing compares the staged rows with each
other and with the rows the table holds in the staged hours (a live append's rows meet the hour's).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from orchestration.clickhouse.schema import (
    EVENT_COLUMN_NAMES,
    LOCK_PREFIX,
    STAGING_PREFIX,
    SchemaPlan,
    adapt_to_existing,
    quote,
)

log = logging.getLogger(__name__)
DAY_LOCK_TIMEOUT_S = 600.0  # how long a day load waits for another writer of the same day
APPEND_LOCK_TIMEOUT_S = 30.0  # a live append waits less (a sensor tick; the next tick retries)
# A lock older than this with none of its holder's statements running is a crashed (killed) writer's and is
# taken over (day_lock); a writer that fails or is interrupted drops its lock itself.
DAY_LOCK_STALE_S = 300.0
SLOW_DAY_REWRITE_S = 60.0  # a day rewrite this long is logged as a warning: the day's other writers wait for it


def partition_id(hour_start: datetime, partition: str = "hour") -> str:
    """ClickHouse partition ID holding ``hour_start``: the epoch seconds of an ``event_hour`` partition, or the
    ``YYYYMMDD`` of a ``toYYYYMMDD(event_hour)`` (day) partition."""
    h = hour_start.astimezone(UTC)
    return f"{h:%Y%m%d}" if partition == "day" else str(int(h.timestamp()))


def load_hour(client, plan: SchemaPlan, hour_start: datetime, parquet: bytes, rows: int) -> int:  # noqa: ANN001
    """Replace the hour ``hour_start`` of ``events`` with the rows of one enriched Parquet file.

    Returns the number of rows the hour holds afterwards (read back from the table).
    """
    return load_hours(client, plan, [(hour_start, parquet, rows)])[0]


def load_hours(client, plan: SchemaPlan, hours: Iterable[tuple[datetime, bytes, int]]) -> list[int]:  # noqa: ANN001
    """Replace each hour of ``hours`` (``(hour_start, enriched Parquet, rows)``, read lazily) as :func:`load_hour`
    does, listing the copies of all of them in two scans instead of two per hour.

    Every hour is staged first (only its staging table is kept, not its bytes), then the copies of all staged
    rows are listed, then each hour is swapped in (atomic per hour, as before) or dropped when empty, then
    listed again (module docstring). A 24-hour range run pays 2 scans of ``events``' insert_ids, not 48.
    Returns the rows each hour holds afterwards, in order.
    """
    plan = adapt_to_existing(client, plan)  # stage in the data table's own layout (REPLACE PARTITION needs it)
    staged: list[tuple[datetime, int, str, str]] = []  # (hour, rows, insert table, local table)
    try:
        for hour_start, parquet, rows in hours:
            insert_table, local_table = _stage_hour(client, plan, hour_start, parquet, rows)
            staged.append((hour_start, rows, insert_table, local_table))
        full_tables = [s[2] for s in staged if s[1]]
        full_hours = [s[0] for s in staged if s[1]]
        if full_tables:
            record_listings(client, plan, full_tables, full_hours)  # before the swaps
        if plan.partition == "day":
            _swap_days(client, plan, [(h, rows, local) for h, rows, _, local in staged])
        for hour_start, rows, _, local_table in staged if plan.partition == "hour" else ():
            pid = partition_id(hour_start)
            if rows:
                swap_hour(client, plan, pid, local_table)
            else:
                client.command(f"ALTER TABLE {plan.data_table}{plan.on_cluster} DROP PARTITION ID '{pid}'")
        if full_tables:
            record_listings(client, plan, full_tables, full_hours)  # a concurrent load of other hours
    finally:
        drop_staging(client, plan, *(t for s in staged for t in s[2:]))
    return [hour_row_count(client, plan, s[0]) for s in staged]


def append_hour(client, plan: SchemaPlan, hour_start: datetime, parquet: bytes, rows: int) -> int:  # noqa: ANN001
    """Add enriched rows to an open hour (the live path, orchestration.sensors.live): staged, their copies in
    other hours listed (as :func:`load_hour` does, before and after), then ``ATTACH PARTITION … FROM`` staging —
    the staged parts join the hour in one step, nothing is replaced. The caller guarantees their insert_ids are
    not in the hour yet; the hour's canonical load later replaces them all. Returns ``rows``.

    Cost: each listing scans ``events``' (project, insert_id) outside the hour, like a load's."""
    if not rows:
        return 0
    plan = adapt_to_existing(client, plan)
    pid = partition_id(hour_start, plan.partition)
    insert_table, local_table = _stage_hour(client, plan, hour_start, parquet, rows)
    try:
        record_listings(client, plan, [insert_table], [hour_start])
        attach = f"ALTER TABLE {plan.data_table}{plan.on_cluster} ATTACH PARTITION ID '{pid}' FROM {local_table}"
        if plan.partition == "day":  # a day rewrite running meanwhile would drop the attached parts
            with day_lock(client, plan, pid, timeout_s=APPEND_LOCK_TIMEOUT_S) as run:
                run(attach)
        else:
            client.command(attach)
        record_listings(client, plan, [insert_table], [hour_start])
    finally:
        drop_staging(client, plan, insert_table, local_table)
    return rows


def _stage_hour(client, plan: SchemaPlan, hour_start: datetime, parquet: bytes,  # noqa: ANN001
                rows: int) -> tuple[str, str]:
    """Create a fresh staging table for ``hour_start`` and send it the enriched Parquet (nothing when ``rows``
    is 0). Returns ``(insert table, local table)``; the caller drops them (:func:`drop_staging`) when done.
    If staging fails, its tables are dropped here before the error propagates."""
    suffix = f"{hour_start.astimezone(UTC):%Y%m%d%H}_{uuid.uuid4().hex[:8]}"
    insert_table, ddl, local_table = plan.staging_statements(suffix)
    try:
        for sql in ddl:
            client.command(sql)
        if rows:
            client.raw_insert(insert_table, list(EVENT_COLUMN_NAMES), insert_block=parquet, fmt="Parquet",
                              settings={"insert_distributed_sync": 1} if plan.cluster else None)
    except BaseException:
        drop_staging(client, plan, insert_table, local_table)
        raise
    return insert_table, local_table


def _swap_days(client, plan: SchemaPlan, staged: Sequence[tuple[datetime, int, str]]) -> None:  # noqa: ANN001
    """Day partitions: swap the staged hours ``(hour, rows, local staging table)`` in, day by day.

    Per day, under the day's lock (:func:`day_lock`: every writer of a day, loads and live appends, takes it,
    so none loses another's rows): a fresh table receives the rows ``events`` holds for the day's *other*
    hours (one INSERT … SELECT, a consistent snapshot of the day's parts) and the staged hours' parts
    (ATTACH PARTITION FROM: hard links, no copy), then replaces the day in one ``REPLACE PARTITION`` — atomic
    for readers, as an hour swap is — or the day is dropped when nothing is left of it. Cost: the day's rows
    are rewritten by each load touching it, which is what bounds this layout to moderate daily volumes."""
    by_day: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    for item in staged:
        by_day[partition_id(item[0], "day")].append(item)
    cols = ", ".join(quote(c) for c in EVENT_COLUMN_NAMES)
    for day, items in sorted(by_day.items()):
        _, ddl, day_table = plan.staging_statements(f"{day}_day_{uuid.uuid4().hex[:8]}")
        try:
            for sql in ddl:
                client.command(sql)
            with day_lock(client, plan, day) as run:  # run: the holder's statements, visible as alive
                t0 = time.monotonic()
                run(f"INSERT INTO {day_table} ({cols}) SELECT {cols} FROM {plan.data_table}"
                    " WHERE toYYYYMMDD(event_hour) = {d:UInt32} AND toUInt32(event_hour) NOT IN {h:Array(UInt32)}",
                    {"d": int(day), "h": [int(h.astimezone(UTC).timestamp()) for h, _, _ in items]})
                for _, rows, local_table in items:
                    if rows:
                        run(f"ALTER TABLE {day_table} ATTACH PARTITION ID '{day}' FROM {local_table}")
                day_rows = int(run(f"SELECT count() FROM {day_table}"))
                if day_rows:
                    swap_hour(client, plan, day, day_table)
                else:
                    client.command(f"ALTER TABLE {plan.data_table} DROP PARTITION ID '{day}'")
                log_day_rewrite(day, day_rows, time.monotonic() - t0)
        finally:
            drop_staging(client, plan, day_table)


def log_day_rewrite(day: str, rows: int, seconds: float) -> None:
    """Every load of a day rewrites it: say what that costs, and warn when it takes over a minute — every
    writer of the day waits that long for the lock: the volume at which hour partitions are needed."""
    if seconds > SLOW_DAY_REWRITE_S:
        log.warning("day %s: rewriting its %d rows took %.0fs (each hour load rewrites its day, and the day's other"
                    " writers wait for it): at this volume create analytics.events with CLICKHOUSE_PARTITION=hour"
                    " (README, Day partitions)", day, rows, seconds)
    else:
        log.info("day %s: %d rows rewritten in %.2fs", day, rows, seconds)


@contextmanager
def day_lock(client, plan: SchemaPlan, day: str, *, timeout_s: float | None = None,  # noqa: ANN001
             stale_s: float | None = None) -> Iterator[Callable[..., Any]]:
    """Hold the write lock of one day partition (``YYYYMMDD``) of ``events``: an empty table named
    ``events__lock_<day>`` whose CREATE succeeds for one writer only (DDL is atomic on the server, so the lock
    works across processes and hosts). Waits up to ``timeout_s`` (TimeoutError after).

    Yields ``run(sql, parameters=None)``: the holder's statements run through it carry the tag the lock table
    holds (a leading SQL comment: chserver assigns its own query ids), so a waiter sees the holder alive in
    ``system.processes`` however long its rewrite takes. A lock older than ``stale_s`` with no query of its
    tag running is a crashed writer's and is taken over (two writers finding the same stale lock at once
    could both take it)."""
    timeout_s = DAY_LOCK_TIMEOUT_S if timeout_s is None else timeout_s
    stale_s = DAY_LOCK_STALE_S if stale_s is None else stale_s
    name = f"{LOCK_PREFIX}{day}"
    table = f"{quote(plan.database)}.{quote(name)}"
    tag = f"eventpipe-day-lock-{day}-{uuid.uuid4().hex}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.command(f"CREATE TABLE {table} (holder String) ENGINE = Memory")
            break
        except Exception as exc:  # clickhouse_connect's DatabaseError: TABLE_ALREADY_EXISTS while held
            if "already exists" not in str(exc).lower():
                raise
        age = client.command(
            "SELECT dateDiff('second', metadata_modification_time, now()) FROM system.tables"
            " WHERE database = {db:String} AND name = {t:String}", parameters={"db": plan.database, "t": name})
        if str(age).strip() not in ("", "[]") and float(age) > stale_s and not _holder_running(client, table):
            log.warning("day %s: taking over a lock held for %ss (a crashed writer)", day, age)
            client.command(f"DROP TABLE IF EXISTS {table}")
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"day {day} of {plan.data_table}: still locked by another writer after {timeout_s:.0f}s")
        time.sleep(0.05)

    def run(sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return client.command(f"/* {tag} */ {sql}", parameters=parameters)

    try:
        run(f"INSERT INTO {table} SELECT {{tag:String}}", {"tag": tag})
        yield run
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")


def _holder_running(client, table: str) -> bool:  # noqa: ANN001
    """Whether a query of the lock's holder (its tag in the query's text) runs on the server now. A lock table
    without a tag (an earlier version's, or a writer killed right after creating it) has no live holder."""
    try:
        tag = str(client.command(f"SELECT any(holder) FROM {table}") or "").strip()
    except Exception:  # noqa: BLE001 - gone meanwhile, or an earlier version's lock without the column
        return False
    if not tag.startswith("eventpipe-day-lock-"):
        return False
    running = client.command("SELECT count() FROM system.processes WHERE position(query, {tag:String}) > 0"
                             " AND query_id != queryID()", parameters={"tag": tag})  # not this query itself
    return int(running) > 0


def swap_hour(client, plan: SchemaPlan, pid: str, local_table: str) -> None:  # noqa: ANN001
    """The atomic step of a load: the staged rows become the hour (readers see the old hour or the new)."""
    client.command(f"ALTER TABLE {plan.data_table}{plan.on_cluster} REPLACE PARTITION ID '{pid}' FROM {local_table}")


def record_listings(client, plan: SchemaPlan, staged: Sequence[str],  # noqa: ANN001
                    hours: Sequence[datetime]) -> None:
    """List the copies and the ties of the staging tables ``staged`` (rows meant for ``hours``).

    Every writer calls it twice: before its rows become visible (a reader never sees an unlisted copy or
    tie) and after (a concurrent load of other hours may have landed between the first listing and the
    swap)."""
    record_copies(client, plan, staged, hours)
    record_ties(client, plan, staged, hours)


def record_copies(client, plan: SchemaPlan, staged: Sequence[str],  # noqa: ANN001
                  hours: Sequence[datetime]) -> None:
    """List in ``event_copies`` the insert_ids of the staging tables ``staged`` (rows meant for the hours
    ``hours``) that ``events`` holds in another hour, or that the staged rows repeat — with the actor of
    every row of them, staged or not. The staged hours themselves are excluded from ``events``: they are being
    replaced.

    One scan of ``events``' (project, insert_id) for the staged projects (``event_hour`` prunes the hours).
    """
    union = " UNION ALL ".join(f"SELECT project, actor_id, insert_id FROM {t}" for t in staged)
    client.command(
        f"INSERT INTO {plan.copies_table} (project, actor_id, insert_id)"
        " SELECT project, arrayJoin(groupUniqArray(actor_id)), insert_id FROM ("
        f"SELECT project, actor_id, insert_id FROM ({union})"
        f" UNION ALL SELECT project, actor_id, insert_id FROM {plan.events_table}"
        " WHERE toUInt32(event_hour) NOT IN {h:Array(UInt32)}"
        f" AND project GLOBAL IN (SELECT DISTINCT project FROM ({union}))"
        f" AND (project, insert_id) GLOBAL IN (SELECT project, insert_id FROM ({union})))"
        " GROUP BY project, insert_id HAVING count() > 1",
        parameters={"h": [int(h.astimezone(UTC).timestamp()) for h in hours]},
        settings={"insert_distributed_sync": 1} if plan.cluster else None)


def record_ties(client, plan: SchemaPlan, staged: Sequence[str], hours: Sequence[datetime]) -> None:  # noqa: ANN001
    """List in ``event_ties`` the actors of the staging tables ``staged`` (rows meant for ``hours``) with two
    rows of one ``event_time`` and distinct insert_ids, among the staged rows and the rows ``events`` holds in
    those hours (ties never span hours). Conservative: an actor listed for rows since replaced costs only the
    insert_id read of its rows."""
    union = " UNION ALL ".join(f"SELECT project, actor_id, event_time, insert_id FROM {t}" for t in staged)
    client.command(
        f"INSERT INTO {plan.ties_table} (project, actor_id) SELECT DISTINCT project, actor_id FROM ("
        f"SELECT project, actor_id FROM ({union}"
        f" UNION ALL SELECT project, actor_id, event_time, insert_id FROM {plan.events_table}"
        " WHERE toUInt32(event_hour) IN {h:Array(UInt32)}"
        f" AND (project, actor_id, event_time) GLOBAL IN (SELECT project, actor_id, event_time FROM ({union})))"
        " GROUP BY project, actor_id, event_time HAVING uniqExact(insert_id) > 1)",
        parameters={"h": [int(h.astimezone(UTC).timestamp()) for h in hours]},
        settings={"insert_distributed_sync": 1} if plan.cluster else None)


def drop_staging(client, plan: SchemaPlan, *tables: str) -> None:  # noqa: ANN001
    for table in dict.fromkeys(tables):
        client.command(f"DROP TABLE IF EXISTS {table}{plan.on_cluster}")


def drop_stale_staging(client, plan: SchemaPlan) -> int:  # noqa: ANN001
    """Remove staging tables left by crashed loads (they are never read)."""
    names = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {p:String})",
        parameters={"db": plan.database, "p": STAGING_PREFIX},
    ).result_rows
    for (name,) in names:
        client.command(f"DROP TABLE IF EXISTS {quote(plan.database)}.{quote(name)}{plan.on_cluster}")
    return len(names)


def hour_row_count(client, plan: SchemaPlan, hour_start: datetime) -> int:  # noqa: ANN001
    return int(
        client.command(
            f"SELECT count() FROM {plan.events_table} WHERE event_hour = toDateTime({{h:UInt32}}, 'UTC')",
            parameters={"h": int(hour_start.astimezone(UTC).timestamp())},
        )
    )


def read_identity_map(client, plan: SchemaPlan, device_ids: list[str] | None = None,  # noqa: ANN001
                      chunk: int = 2000) -> dict[str, str]:
    """device -> user: the earliest-seen user of each device (ties by user_id).

    With ``device_ids``, only those devices, asked in chunks (query parameters travel in the URL)."""
    sql = (f"SELECT device_id, argMin(user_id, (first_seen, user_id)) FROM {quote(plan.database)}.identity_map "
           "{where} GROUP BY device_id")
    if device_ids is None:
        return {str(d): str(u) for d, u in client.query(sql.format(where="")).result_rows}
    ids = sorted(set(device_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), chunk):
        rows = client.query(sql.format(where="WHERE device_id IN {ids:Array(String)}"),
                            parameters={"ids": ids[i : i + chunk]}).result_rows
        out.update((str(d), str(u)) for d, u in rows)
    return out


def write_identities(client, plan: SchemaPlan, learned: pd.DataFrame) -> int:  # noqa: ANN001
    """Record newly learned device -> user pairs (re-inserts collapse: ReplacingMergeTree on the pair)."""
    if learned.empty:
        return 0
    data = [
        [str(r.device_id), str(r.user_id), pd.Timestamp(r.first_seen).to_pydatetime()]
        for r in learned.itertuples(index=False)
    ]
    client.insert("identity_map", data, column_names=["device_id", "user_id", "first_seen"], database=plan.database)
    return len(data)


def table_counts(client, plan: SchemaPlan, hours: Mapping[str, datetime]) -> dict[str, int]:  # noqa: ANN001
    return {key: hour_row_count(client, plan, h) for key, h in hours.items()}
