"""Per-project settings of the analytics side: the project time zone (default UTC).

Every day / week / month bucket and retention day of the query service is a calendar interval in this
zone (so a day at a DST change is 23 or 25 hours long), as in Amplitude, where the Dashboard API's time
zone is the project's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa

from eventpipe_core.metadata.store import MetadataError, MetadataStore, meta, projects

DEFAULT_TIMEZONE = "UTC"

project_settings = sa.Table(
    "project_settings", meta,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default=DEFAULT_TIMEZONE),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def check_timezone(name: str) -> str:
    """An IANA zone name (``Europe/Berlin``, ``UTC``); MetadataError otherwise."""
    if name == "UTC":
        return name
    try:
        if name not in available_timezones():
            raise ZoneInfoNotFoundError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MetadataError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None
    return name


def set_timezone(store: MetadataStore, project: str, timezone: str) -> None:
    check_timezone(timezone)
    store.ensure_schema()
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(projects.c.id).where(projects.c.name == project)).first()
        if row is None:
            raise MetadataError(f"no project named {project!r}")
        pid = int(row[0])
        now = datetime.now(UTC)
        updated = conn.execute(project_settings.update().where(project_settings.c.project_id == pid)
                               .values(timezone=timezone, updated_at=now))
        if updated.rowcount == 0:
            conn.execute(project_settings.insert().values(project_id=pid, timezone=timezone, updated_at=now))


def get_timezone(store: MetadataStore, project: str) -> str:
    """The project's zone; UTC when never set (or for an unknown project)."""
    store.ensure_schema()
    q = (sa.select(project_settings.c.timezone)
         .join(projects, projects.c.id == project_settings.c.project_id).where(projects.c.name == project))
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    return row[0] if row else DEFAULT_TIMEZONE
