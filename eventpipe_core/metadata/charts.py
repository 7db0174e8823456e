"""Saved charts, dashboards and web-UI sessions (tables ``charts``, ``dashboards``, ``web_sessions``).

The web UI (``web/``, served by the query service) saves chart definitions — the query parameters of one
page, as JSON — and arranges saved charts on dashboards. Everything is scoped by project: a key sees only
its project's charts. The tables register on :data:`eventpipe_core.metadata.meta`, so an existing
database (SQLite or PostgreSQL) gains them through ``create_all`` — that is the migration.

``web_sessions`` backs the sign-in cookie: the cookie holds a random token; the row is keyed by the
token's SHA-256 (a stolen database does not yield cookies) and keeps the API key and the secret key
*sealed with the token* (XOR with a SHA-512 keystream of the token: each token seals exactly one secret),
so a session can be turned back into the API's Basic credentials only by whoever holds the cookie, and
revoking the key (or deleting the row at sign-out) ends it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from eventpipe_core.metadata.store import MetadataError, meta, projects

CHART_KINDS = ("segmentation", "funnel", "retention", "users", "lifecycle", "stickiness", "realtime")
MAX_DEFINITION_BYTES = 64 * 1024

charts = sa.Table(
    "charts", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),  # JSON object: the page's query parameters
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

dashboards = sa.Table(
    "dashboards", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("layout", sa.Text, nullable=False),  # JSON list of {"chart_id", "x", "y", "w", "h"}
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

web_sessions = sa.Table(
    "web_sessions", meta,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("api_key", sa.String(64), nullable=False),
    sa.Column("sealed_secret", sa.String(512), nullable=False),  # hex
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite returns naive datetimes


def _keystream(token: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha512(f"{counter}:{token}".encode()).digest()
        counter += 1
    return out[:n]


def seal(token: str, secret: str) -> str:
    data = secret.encode()
    return bytes(a ^ b for a, b in zip(data, _keystream(token, len(data)), strict=True)).hex()


def unseal(token: str, sealed: str) -> str:
    data = bytes.fromhex(sealed)
    return bytes(a ^ b for a, b in zip(data, _keystream(token, len(data)), strict=True)).decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class WebSession:
    project: str
    api_key: str
    secret_key: str
    csrf_token: str
    expires_at: datetime


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise MetadataError("name must be a non-empty string of at most 200 characters")
    return name.strip()


def _check_definition(definition: Any) -> str:
    if not isinstance(definition, dict):
        raise MetadataError("definition must be a JSON object")
    text = json.dumps(definition, sort_keys=True)
    if len(text) > MAX_DEFINITION_BYTES:
        raise MetadataError(f"definition must be at most {MAX_DEFINITION_BYTES} bytes of JSON")
    return text


def _check_layout(layout: Any) -> list[dict[str, int]]:
    if not isinstance(layout, list) or len(layout) > 100:
        raise MetadataError("layout must be a list of at most 100 tiles")
    tiles = []
    for i, tile in enumerate(layout):
        if not isinstance(tile, dict):
            raise MetadataError(f"layout[{i}] must be an object")
        clean: dict[str, int] = {}
        for key, lo, hi, default in (("chart_id", 1, 2**31, None), ("x", 0, 11, 0), ("y", 0, 1000, i), ("w", 1, 12, 6),
                                     ("h", 1, 20, 1)):
            value = tile.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise MetadataError(f"layout[{i}].{key} must be an integer in [{lo}, {hi}]")
            clean[key] = value
        tiles.append(clean)
    return tiles


class ChartStore:
    """Charts, dashboards and web sessions of the metadata store, always scoped to one project."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _pid(conn: sa.Connection, project: str) -> int:
        row = conn.execute(sa.select(projects.c.id).where(projects.c.name == project)).first()
        if row is None:
            raise MetadataError(f"no project named {project!r}")
        return int(row[0])

    @staticmethod
    def _chart_row(row: Any) -> dict[str, Any]:
        return {"id": row.id, "name": row.name, "kind": row.kind, "definition": json.loads(row.definition),
                "created_at": _aware(row.created_at).isoformat(), "updated_at": _aware(row.updated_at).isoformat()}

    # --- charts ----------------------------------------------------------------------------
    def create_chart(self, project: str, name: Any, kind: Any, definition: Any) -> dict[str, Any]:
        if kind not in CHART_KINDS:
            raise MetadataError(f"kind must be one of {', '.join(CHART_KINDS)}")
        name, text, now = _check_name(name), _check_definition(definition), _now()
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            result = conn.execute(charts.insert().values(project_id=pid, name=name, kind=kind, definition=text,
                                                         created_at=now, updated_at=now))
            chart_id = int(result.inserted_primary_key[0])
        return self.get_chart(project, chart_id) or {}

    def update_chart(self, project: str, chart_id: int, name: Any = None, definition: Any = None) -> dict[str, Any] | None:
        values: dict[str, Any] = {"updated_at": _now()}
        if name is not None:
            values["name"] = _check_name(name)
        if definition is not None:
            values["definition"] = _check_definition(definition)
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            done = conn.execute(charts.update().where(charts.c.id == chart_id, charts.c.project_id == pid).values(**values))
        return self.get_chart(project, chart_id) if done.rowcount else None

    def get_chart(self, project: str, chart_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            pid = self._pid(conn, project)
            row = conn.execute(sa.select(charts).where(charts.c.id == chart_id, charts.c.project_id == pid)).first()
        return self._chart_row(row) if row else None

    def list_charts(self, project: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            pid = self._pid(conn, project)
            rows = conn.execute(sa.select(charts).where(charts.c.project_id == pid).order_by(charts.c.id)).all()
        return [self._chart_row(r) for r in rows]

    def delete_chart(self, project: str, chart_id: int) -> bool:
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            return conn.execute(charts.delete().where(charts.c.id == chart_id, charts.c.project_id == pid)).rowcount == 1

    # --- dashboards ------------------------------------------------------------------------
    def _dashboard_row(self, conn: sa.Connection, pid: int, row: Any) -> dict[str, Any]:
        """A dashboard with its tiles; tiles of deleted charts are dropped (a dashboard never points nowhere)."""
        tiles = json.loads(row.layout)
        ids = {t["chart_id"] for t in tiles}
        known = {r.id for r in conn.execute(sa.select(charts.c.id).where(charts.c.project_id == pid, charts.c.id.in_(ids)))}
        return {"id": row.id, "name": row.name, "layout": [t for t in tiles if t["chart_id"] in known],
                "created_at": _aware(row.created_at).isoformat(), "updated_at": _aware(row.updated_at).isoformat()}

    def _check_tiles_exist(self, conn: sa.Connection, pid: int, tiles: list[dict[str, int]]) -> None:
        ids = {t["chart_id"] for t in tiles}
        known = {r.id for r in conn.execute(sa.select(charts.c.id).where(charts.c.project_id == pid, charts.c.id.in_(ids)))}
        missing = sorted(ids - known)
        if missing:
            raise MetadataError(f"layout names charts this project does not have: {missing}")

    def create_dashboard(self, project: str, name: Any, layout: Any = ()) -> dict[str, Any]:
        name, tiles, now = _check_name(name), _check_layout(list(layout)), _now()
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            self._check_tiles_exist(conn, pid, tiles)
            result = conn.execute(dashboards.insert().values(project_id=pid, name=name, layout=json.dumps(tiles),
                                                             created_at=now, updated_at=now))
            dash_id = int(result.inserted_primary_key[0])
        return self.get_dashboard(project, dash_id) or {}

    def update_dashboard(self, project: str, dash_id: int, name: Any = None, layout: Any = None) -> dict[str, Any] | None:
        values: dict[str, Any] = {"updated_at": _now()}
        if name is not None:
            values["name"] = _check_name(name)
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            if layout is not None:
                tiles = _check_layout(layout)
                self._check_tiles_exist(conn, pid, tiles)
                values["layout"] = json.dumps(tiles)
            done = conn.execute(
                dashboards.update().where(dashboards.c.id == dash_id, dashboards.c.project_id == pid).values(**values)
            )
        return self.get_dashboard(project, dash_id) if done.rowcount else None

    def get_dashboard(self, project: str, dash_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            pid = self._pid(conn, project)
            row = conn.execute(
                sa.select(dashboards).where(dashboards.c.id == dash_id, dashboards.c.project_id == pid)
            ).first()
            return self._dashboard_row(conn, pid, row) if row else None

    def list_dashboards(self, project: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            pid = self._pid(conn, project)
            rows = conn.execute(sa.select(dashboards).where(dashboards.c.project_id == pid).order_by(dashboards.c.id)).all()
            return [self._dashboard_row(conn, pid, r) for r in rows]

    def delete_dashboard(self, project: str, dash_id: int) -> bool:
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            done = conn.execute(dashboards.delete().where(dashboards.c.id == dash_id, dashboards.c.project_id == pid))
            return done.rowcount == 1

    # --- web sessions ----------------------------------------------------------------------
    def create_session(self, project: str, api_key: str, secret_key: str, ttl: timedelta) -> tuple[str, WebSession]:
        """A new session for verified credentials: returns the cookie token (never stored) and the session."""
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), _now()
        with self.engine.begin() as conn:
            pid = self._pid(conn, project)
            conn.execute(web_sessions.delete().where(web_sessions.c.expires_at < now))  # sweep expired ones
            conn.execute(web_sessions.insert().values(
                token_hash=token_hash(token), project_id=pid, api_key=api_key, sealed_secret=seal(token, secret_key),
                csrf_token=csrf, created_at=now, expires_at=now + ttl,
            ))
        return token, WebSession(project, api_key, secret_key, csrf, now + ttl)

    def get_session(self, token: str) -> WebSession | None:
        if not token or len(token) > 200:
            return None
        q = (sa.select(web_sessions, projects.c.name.label("project"))
             .join(projects, projects.c.id == web_sessions.c.project_id)
             .where(web_sessions.c.token_hash == token_hash(token)))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None or _aware(row.expires_at) <= _now():
            return None
        return WebSession(row.project, row.api_key, unseal(token, row.sealed_secret), row.csrf_token, _aware(row.expires_at))

    def delete_session(self, token: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(web_sessions.delete().where(web_sessions.c.token_hash == token_hash(token))).rowcount == 1
