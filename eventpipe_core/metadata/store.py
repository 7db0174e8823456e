"""The metadata store: projects, API keys and the tracking plan (``event_schemas``).

SQLAlchemy Core on ``METADATA_DB_URL`` — SQLite by default, PostgreSQL in production. Other
packages use it through :func:`get_metadata_store` (e.g. to list projects or read a plan).

API keys are project identifiers, not secrets: like Amplitude's, they ship inside client apps,
so they are stored as they are and ``keys list`` shows them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from eventpipe_core.settings import Settings, sqlalchemy_url

ENFORCEMENT_MODES = ("off", "flag", "reject")

meta = sa.MetaData()  # every metadata table registers here; feature modules of this package add theirs

projects = sa.Table(
    "projects", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("plan_enforcement", sa.String(10), nullable=False, server_default="off"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

api_keys = sa.Table(
    "api_keys", meta,
    sa.Column("api_key", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

event_schemas = sa.Table(
    "event_schemas", meta,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("event_type", sa.String(1024), primary_key=True),
    sa.Column("properties_schema", sa.Text, nullable=False),  # JSON Schema of event_properties
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


class MetadataError(ValueError):
    """A user-facing error of a metadata operation (unknown project, bad schema, …)."""


@dataclass(frozen=True)
class KeyInfo:
    api_key: str
    project: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class ProjectPlan:
    """What the collector needs per project: the enforcement mode and the schemas by event type."""

    project: str
    enforcement: str
    schemas: dict[str, dict[str, Any]]


def _now() -> datetime:
    return datetime.now(UTC)


def check_json_schema(schema: Any) -> dict[str, Any]:
    """A tracking-plan schema must be a valid JSON Schema object (and compile for the collector)."""
    import fastjsonschema
    import jsonschema

    if not isinstance(schema, dict):
        raise MetadataError("a schema must be a JSON object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
        fastjsonschema.compile(schema)
    except (jsonschema.SchemaError, fastjsonschema.JsonSchemaDefinitionException) as exc:
        raise MetadataError(f"not a valid JSON Schema: {getattr(exc, 'message', exc)}") from None
    return schema


class MetadataStore:
    """Projects, API keys and event schemas in one SQL database."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
            if url_or_engine.startswith("sqlite"):
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            self.engine = sa.create_engine(sqlalchemy_url(url_or_engine), **kwargs)
        self._ready = False

    def ensure_schema(self) -> None:
        if not self._ready:
            if self.engine.dialect.name == "sqlite" and self.engine.url.database:
                from pathlib import Path

                Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            meta.create_all(self.engine)
            self._ready = True

    def dispose(self) -> None:
        self.engine.dispose()

    # --- projects --------------------------------------------------------------------------
    def _project_id(self, conn: sa.Connection, name: str, create: bool = False) -> int:
        row = conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first()
        if row is not None:
            return int(row[0])
        if not create:
            raise MetadataError(f"no project named {name!r}")
        result = conn.execute(projects.insert().values(name=name, plan_enforcement="off", created_at=_now()))
        return int(result.inserted_primary_key[0])

    def create_project(self, name: str) -> None:
        if not name or len(name) > 200:
            raise MetadataError("a project name is 1–200 characters")
        self.ensure_schema()
        with self.engine.begin() as conn:
            self._project_id(conn, name, create=True)

    def list_projects(self) -> list[str]:
        self.ensure_schema()
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(projects.c.name).order_by(projects.c.name))]

    # --- API keys --------------------------------------------------------------------------
    def create_key(self, project: str) -> str:
        """A new API key for ``project`` (created if it does not exist yet)."""
        if not project or len(project) > 200:
            raise MetadataError("a project name is 1–200 characters")
        self.ensure_schema()
        key = secrets.token_hex(16)
        with self.engine.begin() as conn:
            pid = self._project_id(conn, project, create=True)
            conn.execute(api_keys.insert().values(api_key=key, project_id=pid, created_at=_now(), revoked_at=None))
        return key

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        self.ensure_schema()
        q = (
            sa.select(api_keys.c.api_key, projects.c.name, api_keys.c.created_at, api_keys.c.revoked_at)
            .join(projects, projects.c.id == api_keys.c.project_id)
            .order_by(projects.c.name, api_keys.c.created_at)
        )
        if project is not None:
            q = q.where(projects.c.name == project)
        with self.engine.connect() as conn:
            return [KeyInfo(*row) for row in conn.execute(q)]

    def revoke_key(self, api_key: str) -> bool:
        """Revoke a key; False if there is no such active key."""
        self.ensure_schema()
        with self.engine.begin() as conn:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.api_key == api_key, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            return result.rowcount == 1

    def project_for_key(self, api_key: str) -> str | None:
        """The project of an active key, None for unknown or revoked keys."""
        self.ensure_schema()
        q = (
            sa.select(projects.c.name)
            .join(api_keys, projects.c.id == api_keys.c.project_id)
            .where(api_keys.c.api_key == api_key, api_keys.c.revoked_at.is_(None))
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return row[0] if row else None

    # --- tracking plan ---------------------------------------------------------------------
    def set_enforcement(self, project: str, mode: str) -> None:
        if mode not in ENFORCEMENT_MODES:
            raise MetadataError(f"enforcement must be one of {', '.join(ENFORCEMENT_MODES)}")
        self.ensure_schema()
        with self.engine.begin() as conn:
            pid = self._project_id(conn, project)
            conn.execute(projects.update().where(projects.c.id == pid).values(plan_enforcement=mode))

    def set_schema(self, project: str, event_type: str, schema: dict[str, Any]) -> None:
        """Set (replace) the JSON Schema of ``event_properties`` for one event type."""
        check_json_schema(schema)
        if not event_type or len(event_type) > 1024:
            raise MetadataError("an event type is 1–1024 characters")
        self.ensure_schema()
        text = json.dumps(schema, sort_keys=True)
        with self.engine.begin() as conn:
            pid = self._project_id(conn, project)
            where = (event_schemas.c.project_id == pid) & (event_schemas.c.event_type == event_type)
            updated = conn.execute(event_schemas.update().where(where).values(properties_schema=text, updated_at=_now()))
            if updated.rowcount == 0:
                conn.execute(
                    event_schemas.insert().values(
                        project_id=pid, event_type=event_type, properties_schema=text, updated_at=_now()
                    )
                )

    def delete_schema(self, project: str, event_type: str) -> bool:
        self.ensure_schema()
        with self.engine.begin() as conn:
            pid = self._project_id(conn, project)
            result = conn.execute(
                event_schemas.delete().where(event_schemas.c.project_id == pid, event_schemas.c.event_type == event_type)
            )
            return result.rowcount == 1

    def get_schema(self, project: str, event_type: str) -> dict[str, Any] | None:
        return self.plan(project).schemas.get(event_type)

    def plan(self, project: str) -> ProjectPlan:
        """The whole tracking plan of a project (enforcement mode + schemas)."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(projects.c.id, projects.c.plan_enforcement).where(projects.c.name == project)
            ).first()
            if row is None:
                raise MetadataError(f"no project named {project!r}")
            rows = conn.execute(
                sa.select(event_schemas.c.event_type, event_schemas.c.properties_schema)
                .where(event_schemas.c.project_id == row[0])
                .order_by(event_schemas.c.event_type)
            ).all()
        return ProjectPlan(project=project, enforcement=row[1], schemas={r[0]: json.loads(r[1]) for r in rows})


def get_metadata_store(settings: Settings) -> MetadataStore:
    """The store for ``METADATA_DB_URL``, tables created if missing."""
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    return store
