"""The funnel registry: each project's own funnels, beside the defaults of ``dbt_project/dbt_project.yml``.

``eventpipe funnels create|list|delete`` manages it; the dbt marts run (orchestration/dbt/assets.py) reads it
at run time and passes it to dbt as the var ``project_funnels``, so a new funnel needs no redeploy. A funnel
definition has the shape of the yml's (``name, steps, conversion_window_seconds, order, hold_constant``)
plus ``project``: it counts only that project's events. Semantics of the orders: dbt_project/macros/funnel.sql.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from eventpipe_core.metadata.store import MetadataError, MetadataStore, meta, projects

ORDERS = ("this", "exact", "any")
MAX_STEPS = 20
MAX_WINDOW_SECONDS = 366 * 86_400
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
WINDOW_RE = re.compile(r"^(\d+)\s*([smhdw]?)$")
UNIT_SECONDS = {"s": 1, "": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}

funnels = sa.Table(
    "funnels", meta,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),  # JSON array of event types
    sa.Column("conversion_window_seconds", sa.Integer, nullable=False),
    sa.Column("order_mode", sa.String(10), nullable=False),
    sa.Column("hold_constant", sa.String(1024), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class FunnelDef:
    project: str
    name: str
    steps: tuple[str, ...]
    conversion_window_seconds: int
    order: str = "this"
    hold_constant: str | None = None

    def as_dbt(self) -> dict[str, Any]:
        """The definition as fct_funnels reads it (one item of the var ``project_funnels``)."""
        out: dict[str, Any] = {"name": self.name, "project": self.project, "steps": list(self.steps),
                               "conversion_window_seconds": self.conversion_window_seconds, "order": self.order}
        if self.hold_constant:
            out["hold_constant"] = self.hold_constant
        return out


def parse_window(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or plain seconds -> seconds (1 s … 366 days)."""
    match = WINDOW_RE.match(text.strip().lower())
    if not match:
        raise MetadataError(f"--window: {text!r} is not a duration like 7d, 12h, 30m, 90s or 2w")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise MetadataError(f"--window: {text!r} must be between 1 second and 366 days")
    return seconds


def parse_steps(text: str | list[str]) -> tuple[str, ...]:
    """``a,b,c`` -> ('a', 'b', 'c'): 2–20 distinct, non-empty event types of at most 1024 characters."""
    steps = tuple(s.strip() for s in (text.split(",") if isinstance(text, str) else text))
    if len(steps) < 2 or len(steps) > MAX_STEPS:
        raise MetadataError(f"--steps: a funnel has 2–{MAX_STEPS} steps (comma-separated event types), got {len(steps)}")
    for s in steps:
        if not s or len(s) > 1024:
            raise MetadataError("--steps: every step is a non-empty event type of at most 1024 characters")
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        raise MetadataError(f"--steps: each event type may appear once, repeated: {', '.join(dupes)}")
    return steps


def check_funnel(f: FunnelDef) -> FunnelDef:
    if not NAME_RE.match(f.name):
        raise MetadataError(f"--name: {f.name!r} must be 1–200 characters: letters, digits, '_', '-', '.' "
                            "(starting with a letter or digit)")
    if f.order not in ORDERS:
        raise MetadataError(f"--order: must be one of {', '.join(ORDERS)}, got {f.order!r}")
    parse_steps(list(f.steps))
    if not 1 <= f.conversion_window_seconds <= MAX_WINDOW_SECONDS:
        raise MetadataError("--window: must be between 1 second and 366 days")
    if f.hold_constant is not None and (not f.hold_constant.strip() or len(f.hold_constant) > 1024):
        raise MetadataError("--hold-constant: an event property name of 1–1024 characters")
    return f


class FunnelRegistry:
    """Funnels per project in the metadata store (same database as projects and API keys)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def create(self, f: FunnelDef) -> FunnelDef:
        check_funnel(f)
        self.store.ensure_schema()
        with self.store.engine.begin() as conn:
            project_id = self._project_id(conn, f.project)
            exists = conn.execute(sa.select(funnels.c.name).where(
                funnels.c.project_id == project_id, funnels.c.name == f.name)).first()
            if exists:
                raise MetadataError(f"--name: project {f.project!r} already has a funnel named {f.name!r} "
                                    "(delete it first to redefine it)")
            conn.execute(funnels.insert().values(
                project_id=project_id, name=f.name, steps=json.dumps(list(f.steps)),
                conversion_window_seconds=f.conversion_window_seconds, order_mode=f.order,
                hold_constant=f.hold_constant, created_at=datetime.now(UTC)))
        return f

    def list(self, project: str | None = None) -> list[FunnelDef]:
        self.store.ensure_schema()
        q = (sa.select(projects.c.name.label("project"), funnels.c.name, funnels.c.steps, funnels.c.conversion_window_seconds,
                       funnels.c.order_mode, funnels.c.hold_constant)
             .join(projects, projects.c.id == funnels.c.project_id).order_by(projects.c.name, funnels.c.name))
        with self.store.engine.connect() as conn:
            if project is not None:
                q = q.where(funnels.c.project_id == self._project_id(conn, project))
            rows = conn.execute(q).all()
        return [FunnelDef(r.project, r.name, tuple(json.loads(r.steps)), int(r.conversion_window_seconds), r.order_mode,
                          r.hold_constant) for r in rows]

    def delete(self, project: str, name: str) -> bool:
        self.store.ensure_schema()
        with self.store.engine.begin() as conn:
            project_id = self._project_id(conn, project)
            return conn.execute(funnels.delete().where(
                funnels.c.project_id == project_id, funnels.c.name == name)).rowcount > 0

    @staticmethod
    def _project_id(conn: sa.Connection, name: str) -> int:
        row = conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first()
        if row is None:
            raise MetadataError(f"--project: no project named {name!r} (a project exists once it has an API key: "
                                "`eventpipe keys create`)")
        return int(row[0])
