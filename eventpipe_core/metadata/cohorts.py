"""Behavioral and static cohorts: definitions in the metadata store (tables ``cohorts``, ``cohort_static_members``).

A definition is JSON, validated by :func:`check_definition`::

    {"match": "all" | "any",
     "conditions": [
        {"type": "performed", "event_type": "purchase", "op": ">=" | "<=" | "=", "count": 2, "days": 30,
         "filters": [{"prop": "plan", "op": "is", "values": ["paid"]}]},      # event-property filters
        {"type": "not_performed", "event_type": "churn_survey", "days": 14, "filters": []},
        {"type": "property", "prop": "plan", "op": "is", "values": ["paid"]},  # user property
        {"type": "property", "prop": "country", "op": "is", "values": ["@EU"]} # geo; "@EU" = the EU-27 list
     ]}

Semantics (the contract of the membership SQL in ``query_service.compile.cohorts`` and of its tests), for an
``as_of`` day D (UTC): the candidates are the project's actors with at least one stored event before the end of D
(deduplicated by insert_id, bots excluded — the query service's event source); ``performed`` counts the actor's
events of that type matching the filters in the ``days`` days ending with D ([end of D - days, end of D)) and
compares with ``op count`` (``<=`` includes 0); ``not_performed`` is ``performed <= 0``; ``property`` compares
the actor's latest non-empty value of the property (a built-in column such as ``country``, else a key of
``user_properties``) before the end of D with the filter's op/values. ``match`` all = every condition,
any = at least one. A **static** cohort is a list of actor ids (uploaded by CSV or API): its members are that
list, whatever the events say. Cohort ids are random 12-character tokens (Amplitude-style opaque ids).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from eventpipe_core.metadata.store import MetadataError, MetadataStore, meta, projects

cohorts = sa.Table(
    "cohorts",
    meta,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # behavioral | static
    sa.Column("definition", sa.Text, nullable=False),  # JSON (behavioral) or "{}" (static)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_cohort_project_name"),
)

cohort_static_members = sa.Table(
    "cohort_static_members",
    meta,
    sa.Column("cohort_id", sa.String(16), sa.ForeignKey("cohorts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("actor_id", sa.String(1024), primary_key=True),
)

EU_COUNTRIES: tuple[str, ...] = (
    "Austria", "Belgium", "Bulgaria", "Croatia", "Cyprus", "Czechia", "Czech Republic", "Denmark", "Estonia", "Finland",
    "France", "Germany", "Greece", "Hungary", "Ireland", "Italy", "Latvia", "Lithuania", "Luxembourg", "Malta",
    "Netherlands", "Poland", "Portugal", "Romania", "Slovakia", "Slovenia", "Spain", "Sweden",
)
COUNT_OPS = (">=", "<=", "=")
PROPERTY_OPS = ("is", "is not", "contains", "does not contain", "less", "less or equal", "greater", "greater or equal")
MAX_DAYS = 3650
MAX_STATIC_MEMBERS = 1_000_000


class CohortError(MetadataError):
    """A bad cohort definition; ``field`` names the offending part (e.g. ``conditions[1].days``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Cohort:
    id: str
    project: str
    name: str
    kind: str
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "name": self.name, "kind": self.kind,
                "definition": self.definition, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def expand_values(values: list[str]) -> list[str]:
    """``@EU`` -> the EU member states (country names as geo-IP writes them)."""
    out: list[str] = []
    for v in values:
        out.extend(EU_COUNTRIES if v == "@EU" else [v])
    return out


def _values(where: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in v):
        raise CohortError(where, "must be a non-empty list of strings or numbers")
    return [str(x) for x in v]


def _filter(where: str, f: Any, ops: tuple[str, ...] = PROPERTY_OPS) -> dict[str, Any]:
    if not isinstance(f, dict):
        raise CohortError(where, "must be an object {prop, op, values}")
    prop = f.get("prop")
    if not isinstance(prop, str) or not prop or len(prop) > 1024:
        raise CohortError(f"{where}.prop", "must be a non-empty string")
    op = f.get("op", "is")
    if op not in ops:
        raise CohortError(f"{where}.op", f"must be one of {', '.join(ops)}")
    values = _values(f"{where}.values", f.get("values"))
    if op in ("less", "less or equal", "greater", "greater or equal"):
        try:
            float(values[0])
        except ValueError:
            raise CohortError(f"{where}.values", f"{op} needs a number") from None
    return {"prop": prop, "op": op, "values": values}


def _int(where: str, v: Any, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise CohortError(where, f"must be an integer in [{lo}, {hi}]")
    return v


def check_definition(d: Any) -> dict[str, Any]:
    """Validate and normalize a behavioral definition (errors name the field)."""
    if not isinstance(d, dict):
        raise CohortError("definition", "must be an object {match, conditions}")
    match = d.get("match", "all")
    if match not in ("all", "any"):
        raise CohortError("match", "must be all or any")
    conds = d.get("conditions")
    if not isinstance(conds, list) or not 1 <= len(conds) <= 20:
        raise CohortError("conditions", "must be a list of 1 to 20 conditions")
    out = []
    for i, c in enumerate(conds):
        where = f"conditions[{i}]"
        if not isinstance(c, dict):
            raise CohortError(where, "must be an object")
        kind = c.get("type")
        if kind in ("performed", "not_performed"):
            et = c.get("event_type")
            if not isinstance(et, str) or not et:
                raise CohortError(f"{where}.event_type", "must be a non-empty string")
            filters = c.get("filters") or []
            if not isinstance(filters, list):
                raise CohortError(f"{where}.filters", "must be a list")
            norm = {"type": kind, "event_type": et, "days": _int(f"{where}.days", c.get("days"), 1, MAX_DAYS),
                    "filters": [_filter(f"{where}.filters[{j}]", f) for j, f in enumerate(filters)]}
            if kind == "performed":
                op = c.get("op", ">=")
                if op not in COUNT_OPS:
                    raise CohortError(f"{where}.op", f"must be one of {', '.join(COUNT_OPS)}")
                norm |= {"op": op, "count": _int(f"{where}.count", c.get("count", 1), 0, 10**9)}
            out.append(norm)
        elif kind == "property":
            out.append({"type": "property", **_filter(where, c)})
        else:
            raise CohortError(f"{where}.type", "must be performed, not_performed or property")
    return {"match": match, "conditions": out}


def _project_id(conn: sa.Connection, project: str) -> int:
    pid = conn.execute(sa.select(projects.c.id).where(projects.c.name == project)).scalar()
    if pid is None:
        raise MetadataError(f"unknown project {project!r}")
    return int(pid)


def _row(r: Any, project: str) -> Cohort:
    return Cohort(r.id, project, r.name, r.kind, json.loads(r.definition), r.created_at, r.updated_at)


def create_cohort(store: MetadataStore, project: str, name: str, definition: Any = None,
                  static_members: list[str] | None = None) -> Cohort:
    """A behavioral cohort (``definition``) or a static one (``static_members``)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise CohortError("name", "must be a non-empty string of at most 200 characters")
    kind = "static" if static_members is not None else "behavioral"
    norm = check_definition(definition) if kind == "behavioral" else {}
    members = _check_members(static_members) if static_members is not None else []
    now = datetime.now(UTC)
    cid = secrets.token_hex(6)
    with store.engine.begin() as conn:
        pid = _project_id(conn, project)
        exists = conn.execute(sa.select(cohorts.c.id).where(cohorts.c.project_id == pid, cohorts.c.name == name)).first()
        if exists:
            raise CohortError("name", f"a cohort named {name!r} already exists in this project")
        conn.execute(cohorts.insert().values(id=cid, project_id=pid, name=name, kind=kind, definition=json.dumps(norm),
                                             created_at=now, updated_at=now))
        if members:
            conn.execute(cohort_static_members.insert(), [{"cohort_id": cid, "actor_id": m} for m in members])
    return Cohort(cid, project, name, kind, norm, now, now)


def _check_members(members: list[str]) -> list[str]:
    if not isinstance(members, list) or len(members) > MAX_STATIC_MEMBERS:
        raise CohortError("user_ids", f"must be a list of at most {MAX_STATIC_MEMBERS} ids")
    clean = []
    for i, m in enumerate(members):
        if not isinstance(m, str) or not m.strip() or len(m) > 1024:
            raise CohortError(f"user_ids[{i}]", "must be a non-empty string of at most 1024 characters")
        clean.append(m.strip())
    return sorted(set(clean))


def update_cohort(store: MetadataStore, project: str, cohort_id: str, *, definition: Any = None,
                  static_members: list[str] | None = None) -> Cohort:
    c = get_cohort(store, project, cohort_id)
    if c is None:
        raise KeyError(cohort_id)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        if c.kind == "behavioral":
            if definition is None:
                raise CohortError("definition", "is required to update a behavioral cohort")
            norm = check_definition(definition)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(definition=json.dumps(norm), updated_at=now))
        else:
            if static_members is None:
                raise CohortError("user_ids", "is required to update a static cohort")
            members = _check_members(static_members)
            conn.execute(cohort_static_members.delete().where(cohort_static_members.c.cohort_id == cohort_id))
            if members:
                conn.execute(cohort_static_members.insert(), [{"cohort_id": cohort_id, "actor_id": m} for m in members])
            conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(updated_at=now))
    out = get_cohort(store, project, cohort_id)
    assert out is not None
    return out


def get_cohort(store: MetadataStore, project: str, cohort_id: str) -> Cohort | None:
    with store.engine.connect() as conn:
        r = conn.execute(
            sa.select(cohorts).join(projects, projects.c.id == cohorts.c.project_id)
            .where(cohorts.c.id == cohort_id, projects.c.name == project)
        ).first()
    return _row(r, project) if r else None


def list_cohorts(store: MetadataStore, project: str | None = None) -> list[Cohort]:
    """Cohorts of one project (or of every project: the materializing asset)."""
    q = sa.select(cohorts, projects.c.name.label("project_name")).join(projects, projects.c.id == cohorts.c.project_id)
    if project is not None:
        q = q.where(projects.c.name == project)
    with store.engine.connect() as conn:
        rows = conn.execute(q.order_by(projects.c.name, cohorts.c.name)).all()
    return [_row(r, r.project_name) for r in rows]


def static_members(store: MetadataStore, cohort_id: str) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(cohort_static_members.c.actor_id)
                                 .where(cohort_static_members.c.cohort_id == cohort_id)
                                 .order_by(cohort_static_members.c.actor_id)).scalars())


def delete_cohort(store: MetadataStore, project: str, cohort_id: str) -> bool:
    if get_cohort(store, project, cohort_id) is None:
        return False
    with store.engine.begin() as conn:
        conn.execute(cohort_static_members.delete().where(cohort_static_members.c.cohort_id == cohort_id))
        conn.execute(cohorts.delete().where(cohorts.c.id == cohort_id))
    return True
