"""Live hours: the landing sensor's appends of an *open* hour's new rows to ``analytics.events`` (issue 17).

Why: the canonical hourly load re-enriches and REPLACEs the whole hour so far on every run, so its cost
grows with the hour and, at 10k ev/s, runs pile up (minutes of lag). While an hour is open (its end +
``LIVE_HOUR_CLOSE_SECONDS`` has not passed) the sensor instead reads only the objects of the commit records
it has not seen, enriches that increment with state kept here per hour, and INSERTs it
(:func:`orchestration.clickhouse.load.append_hour`). Once the hour closes, one canonical run
(``close|<hour>``) REPLACE-PARTITIONs it with the full :func:`enrichment.rules.enrich_hour` output.

State per open hour (:class:`HourState`, in the code-server process; rebuilt from ClickHouse when missing —
after a restart — or when the hour was loaded canonically since it was built):

* the insert_ids the hour holds, as sorted 8-byte hashes (``pandas.util.hash_array``): dedup against
  them is exact per insert_id (the hour holds one row per insert_id, as the canonical load does), up to a
  64-bit hash collision (about 1e-5 for a 36M-row hour), which would drop one row until the close run;
* the session carry (``enrich_hour``'s ``carry``: last (event ms, session id) per session key);
* the device -> user map of devices seen so far (asked from ``identity_map`` once per device).

Provisional until the hour closes — where live rows can differ from the canonical ones:

* sessions of out-of-order events: an event older than its key's last appended one continues or starts a
  session from the carry, not from its place in the hour's order;
* bot-by-rate: a device's events per minute are counted within one increment only (a few seconds of
  events), so the rate rule flags fewer devices; the user-agent rule is exact;
* identities learned later: an anonymous event appended before its device's user was seen keeps an empty
  ``resolved_user_id``; the close run stitches it;
* which copy of a duplicate insert_id is kept: the first appended, not the first landed.

Counts are never provisional: dedup is exact, so an hour's live rows are the canonical rows' insert_ids;
an insert_id with a row in another hour is listed in ``event_copies`` by :func:`append_hour` (as a canonical
load lists it), so readers count it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from enrichment.lake_io import hour_parts, read_visible_object
from enrichment.rules import SESSION_KEY_SQL, EnrichmentConfig, earliest_users, enrich_hour, to_parquet_bytes
from eventpipe_core.lake_catalog import CommitRecord, hour_objects
from eventpipe_core.lake_store import LakeStore
from orchestration.clickhouse.load import append_hour, read_identity_map, write_identities
from orchestration.clickhouse.schema import SchemaPlan

log = logging.getLogger(__name__)
ONE_HOUR = timedelta(hours=1)


def hash_ids(values: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """8-byte hashes of insert_ids (deterministic across processes: pandas' fixed SipHash key)."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False).astype(np.uint64)


def contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per element of ``ids``: is it in ``sorted_ids`` (ascending)?"""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    pos = np.searchsorted(sorted_ids, ids)
    return sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == ids


@dataclass
class HourState:
    """What an open hour's increments are enriched and deduplicated against (see the module docstring)."""

    ids: np.ndarray  # sorted uint64 hashes of the insert_ids the hour holds
    carry: dict[str, tuple[int, int]]
    known: dict[str, str] = field(default_factory=dict)  # device -> user of the devices asked so far
    asked: set[str] = field(default_factory=set)
    mark: int | None = None  # storage id of the hour's latest canonical load when this state was built

    def add_ids(self, new: np.ndarray) -> None:
        # timsort (kind="stable") merges the two sorted runs in linear time
        self.ids = np.sort(np.concatenate([self.ids, np.sort(new)]), kind="stable")

    def merge_carry(self, state: dict[str, tuple[int, int]]) -> None:
        """Keep each key's latest event (an out-of-order increment does not move a session back)."""
        for key, value in state.items():
            old = self.carry.get(key)
            if old is None or value[0] >= old[0]:
                self.carry[key] = value


_STATES: dict[tuple[str, str], HourState] = {}  # (events table, hour key) -> state


def forget(key: str) -> None:
    """Drop an hour's state (a canonical run of it is in flight, or it closed): rebuilt before the next append."""
    for k in [k for k in _STATES if k[1] == key]:
        del _STATES[k]


def forget_all() -> None:
    _STATES.clear()


def cached_hours() -> set[str]:
    return {k[1] for k in _STATES}


def rebuild_state(client, plan: SchemaPlan, hour: datetime, config: EnrichmentConfig,  # noqa: ANN001
                  mark: int | None) -> HourState:
    """An hour's state from what ``analytics.events`` holds: its insert_ids (streamed and hashed block by block:
    memory is 8 bytes a row), and the session carry — each session key's last (event ms, session id) in
    (event_time, insert_id) order over the hour and the previous hour's last ``session_timeout``, computed by
    the server (as :func:`enrichment.rules.session_state_from_enriched` does from enriched rows)."""
    h = int(hour.timestamp())
    chunks = [np.zeros(0, dtype=np.uint64)]
    with client.query_arrow_stream(
            f"SELECT insert_id FROM {plan.events_table} WHERE event_hour = toDateTime({{h:UInt32}}, 'UTC')",
            parameters={"h": h}, use_strings=True) as stream:
        for batch in stream:
            chunks.append(hash_ids(batch.column(0)))
    ids = np.sort(np.concatenate(chunks))
    cutoff_ms = int((hour - config.session_timeout).timestamp() * 1000)
    rows = client.query(
        f"SELECT {SESSION_KEY_SQL} AS key, argMax((toUnixTimestamp64Milli(event_time), session_id), (event_time, insert_id)) "
        f"FROM {plan.events_table} WHERE event_hour IN (toDateTime({{p:UInt32}}, 'UTC'), toDateTime({{h:UInt32}}, 'UTC')) "
        "AND toUnixTimestamp64Milli(event_time) >= {c:Int64} GROUP BY key",
        parameters={"h": h, "p": h - 3600, "c": cutoff_ms}).result_rows
    carry = {str(k): (int(v[0]), int(v[1])) for k, v in rows}
    log.info("live %s: state rebuilt from the table (%d rows, %d session keys)", hour, len(ids), len(carry))
    return HourState(ids, carry, mark=mark)


@dataclass
class Appended:
    rows: int = 0  # rows inserted
    duplicates: int = 0  # increment rows already in the hour (a retried tick, redelivered events)
    projects: set[str] = field(default_factory=set)


def read_increment(store: LakeStore, hour: datetime, records: list[CommitRecord]) -> pa.Table | None:
    """The rows of ``hour`` in the objects of ``records`` only (an open hour is not compacted yet)."""
    day, hh = hour_parts(hour)
    tables = [read_visible_object(store, v)[0] for v in hour_objects(store, day, hh, records, compactions=[])]
    return pa.concat_tables(tables) if tables else None


def append_increment(store: LakeStore, client, plan: SchemaPlan, key: str, hour: datetime,  # noqa: ANN001
                     records: list[CommitRecord], config: EnrichmentConfig, geo_lookup, mark: int | None,  # noqa: ANN001
                     ) -> Appended:
    """Enrich and INSERT the rows of ``records`` for the open ``hour`` that the hour does not hold yet.

    Idempotent: a re-read increment (tick retried after a lost cursor) inserts nothing. On any failure the
    hour's state is dropped, so the next append rebuilds it from what the table really holds."""
    state = _STATES.get((plan.events_table, key))
    if state is None or state.mark != mark:
        state = _STATES[plan.events_table, key] = rebuild_state(client, plan, hour, config, mark)
    raw = read_increment(store, hour, records)
    out = Appended()
    if raw is None or raw.num_rows == 0:
        return out
    # the increment's projects even when nothing is new: a tick retried after a failed bump bumps again
    out.projects = set(pc.unique(raw.column("project")).to_pylist())
    fresh = ~contains(state.ids, hash_ids(raw.column("insert_id")))
    out.duplicates = int(raw.num_rows - np.count_nonzero(fresh))
    raw = raw.filter(pa.array(fresh))
    if raw.num_rows == 0:
        return out
    try:
        devices = [d for d in pc.unique(raw.column("device_id")).to_pylist() if d and d not in state.asked]
        if devices:
            state.known.update(read_identity_map(client, plan, devices))
            state.asked.update(devices)
        result = enrich_hour(raw, hour_start=hour, carry=state.carry, identity_map=state.known,
                             geo_lookup=geo_lookup, config=config)
        table = result.table
        append_hour(client, plan, hour, to_parquet_bytes(table), table.num_rows)
        write_identities(client, plan, result.identities)
    except Exception:
        forget(key)
        raise
    state.add_ids(hash_ids(table.column("insert_id")))
    state.merge_carry(result.session_state)
    for device, user in earliest_users(result.identities).items():
        state.known.setdefault(device, user)
    out.rows = table.num_rows
    return out


def days_of(hours: dict[str, tuple[datetime, set[str]]]) -> dict[date, set[str]]:
    """{day: projects} of appended hours, for the query cache's data versions."""
    out: dict[date, set[str]] = {}
    for hour, projects in hours.values():
        out.setdefault(hour.date(), set()).update(projects)
    return out
