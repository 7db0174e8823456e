"""Materialize cohort membership into ClickHouse ``cohort_members`` (no Dagster here: the asset and tests call it).

One snapshot per (cohort, as_of day): the rows of that pair are deleted, then the members inserted — the
membership SQL runs inside ClickHouse (``INSERT … SELECT``), so actor lists never pass through Python.
A reader may briefly see an empty snapshot of a cohort being re-materialized for the same day; the segment
reads the latest ``as_of`` of a cohort, so the usual daily run (a new day) never exposes that gap.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.cohorts import Cohort, list_cohorts, static_members
from query_service.compile.cohorts import COHORT_MEMBERS_DDL, MEMBERS_TABLE, compile_membership


def ensure_members_table(client: Any, database: str) -> None:
    client.command(COHORT_MEMBERS_DDL.format(db=f"`{database}`"))


def materialize_cohort(client: Any, database: str, cohort: Cohort, as_of: date, members: list[str] | None = None) -> int:
    """Replace the cohort's snapshot for ``as_of``; returns its member count. Static cohorts pass ``members``."""
    table = f"`{database}`.{MEMBERS_TABLE}"
    key = {"cm_cohort": cohort.id, "cm_day": as_of, "cm_project": cohort.project}
    client.command(f"DELETE FROM {table} WHERE cohort_id = {{cm_cohort:String}} AND as_of = {{cm_day:Date}}", parameters=key)
    if cohort.kind == "static":
        rows = [[cohort.project, cohort.id, m, as_of] for m in (members or [])]
        if rows:
            client.insert(table, rows, column_names=["project", "cohort_id", "actor_id", "as_of"])
    else:
        compiled = compile_membership(cohort.project, cohort.definition, as_of)
        client.command(
            f"INSERT INTO {table} (project, cohort_id, actor_id, as_of) SELECT {{cm_project:String}}, {{cm_cohort:String}},"
            f" actor_id, {{cm_day:Date}} FROM ({compiled.sql})",
            parameters={**compiled.params, **key},
        )
    return int(client.query(f"SELECT count() FROM {table} WHERE cohort_id = {{cm_cohort:String}} AND as_of = {{cm_day:Date}}",
                            parameters=key).result_rows[0][0])


def materialize_all(client: Any, database: str, store: MetadataStore, as_of: date,
                    only: set[str] | None = None) -> dict[str, int]:
    """Every cohort of every project (or the ids in ``only``) as of a day: cohort id -> member count."""
    ensure_members_table(client, database)
    out = {}
    for cohort in list_cohorts(store):
        if only is not None and cohort.id not in only:
            continue
        members = static_members(store, cohort.id) if cohort.kind == "static" else None
        out[cohort.id] = materialize_cohort(client, database, cohort, as_of, members)
    return out


def read_members(client: Any, database: str, cohort_id: str, as_of: date | None = None) -> tuple[date | None, list[str]]:
    """The cohort's members in its latest snapshot (or the one of ``as_of``)."""
    table = f"`{database}`.{MEMBERS_TABLE}"
    if as_of is None:
        r = client.query(f"SELECT max(as_of), count() FROM {table} WHERE cohort_id = {{c:String}}",
                         parameters={"c": cohort_id}).result_rows[0]
        if not r[1]:
            return None, []
        as_of = r[0]
    rows = client.query(f"SELECT DISTINCT actor_id FROM {table} WHERE cohort_id = {{c:String}} AND as_of = {{d:Date}}"
                        " ORDER BY actor_id", parameters={"c": cohort_id, "d": as_of}).result_rows
    return as_of, [r[0] for r in rows]
