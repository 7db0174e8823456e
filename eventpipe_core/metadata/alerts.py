"""Alert rules and their history in the metadata store (tables ``alerts``, ``alert_events``).

``alerts`` holds the rule (:class:`eventpipe_core.alerting.Rule` fields, a per-alert HMAC secret generated at
creation, ``snoozed_until``) and its evaluation state (status + last evaluated values, JSON) so a sensor tick in
a fresh process continues where the last one stopped. ``alert_events`` is the transition history; a transition
is inserted once (primary key = its stable id) and marked ``delivered_at`` once its webhook answered 2xx, so a
crash between evaluation and delivery re-delivers only undelivered transitions.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from eventpipe_core.alerting import CONDITIONS, AlertState, Rule, deliver, evaluate
from eventpipe_core.metadata.store import MetadataError, MetadataStore, meta, projects

alerts = sa.Table(
    "alerts",
    meta,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("series", sa.Text, nullable=False),  # what to watch (e.g. a saved chart id + series index), JSON
    sa.Column("condition", sa.String(10), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("interval_s", sa.Integer, nullable=False),
    sa.Column("webhook_url", sa.String(2000), nullable=False),
    sa.Column("secret", sa.String(64), nullable=False),
    sa.Column("status", sa.String(10), nullable=False, server_default="resolved"),
    sa.Column("state", sa.Text, nullable=False, server_default="{}"),  # last evaluation: interval -> [value, breach]
    sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

alert_events = sa.Table(
    "alert_events",
    meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("alert_id", sa.String(16), sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("type", sa.String(10), nullable=False),  # firing | resolved | revised
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
)


def create_alert(store: MetadataStore, project: str, name: str, *, series: dict[str, Any], condition: str, threshold: float,
                 interval: timedelta, webhook_url: str) -> tuple[str, str]:
    """(alert id, webhook secret)."""
    if condition not in CONDITIONS:
        raise MetadataError(f"condition must be one of {', '.join(CONDITIONS)}")
    if not webhook_url.startswith(("http://", "https://")):
        raise MetadataError("webhook_url must be an http(s) URL")
    aid, secret = secrets.token_hex(6), secrets.token_hex(32)
    with store.engine.begin() as conn:
        pid = conn.execute(sa.select(projects.c.id).where(projects.c.name == project)).scalar()
        if pid is None:
            raise MetadataError(f"unknown project {project!r}")
        conn.execute(alerts.insert().values(
            id=aid, project_id=pid, name=name, series=json.dumps(series), condition=condition, threshold=float(threshold),
            interval_s=int(interval.total_seconds()), webhook_url=webhook_url, secret=secret, created_at=datetime.now(UTC)))
    return aid, secret


def _load(conn: sa.Connection, alert_id: str) -> tuple[Rule, AlertState]:
    r = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
    if r is None:
        raise KeyError(alert_id)
    rule = Rule(r.id, r.condition, r.threshold, timedelta(seconds=r.interval_s), r.webhook_url, r.secret)
    last = {datetime.fromisoformat(k): (v[0], bool(v[1])) for k, v in json.loads(r.state).items()}
    snoozed = r.snoozed_until.replace(tzinfo=r.snoozed_until.tzinfo or UTC) if r.snoozed_until else None
    return rule, AlertState(status=r.status, last=last, snoozed_until=snoozed)


def snooze(store: MetadataStore, alert_id: str, until: datetime | None) -> None:
    with store.engine.begin() as conn:
        conn.execute(alerts.update().where(alerts.c.id == alert_id).values(snoozed_until=until))


def run_alert(store: MetadataStore, alert_id: str, series: Sequence[tuple[datetime, float]], now: datetime,
              **delivery: Any) -> list[dict[str, Any]]:
    """Evaluate one alert on its current series, record new transitions, deliver every undelivered one."""
    with store.engine.begin() as conn:
        rule, state = _load(conn, alert_id)
        events = state.update(rule, evaluate(rule, series, now), now)
        conn.execute(alerts.update().where(alerts.c.id == alert_id).values(
            status=state.status, state=json.dumps({t.isoformat(): [v, b] for t, (v, b) in state.last.items()})))
        for e in events:
            exists = conn.execute(sa.select(alert_events.c.id).where(alert_events.c.id == e["id"])).first()
            if not exists:
                conn.execute(alert_events.insert().values(
                    id=e["id"], alert_id=alert_id, type=e["type"], interval_start=datetime.fromisoformat(e["interval_start"]),
                    payload=json.dumps(e | {"evaluated_at": now.isoformat()}), created_at=datetime.now(UTC),
                    delivered_at=now if e["snoozed"] else None))
    deliver_pending(store, alert_id, rule, **delivery)
    return events


def deliver_pending(store: MetadataStore, alert_id: str, rule: Rule | None = None, **delivery: Any) -> int:
    """Deliver the alert's not-yet-delivered transitions, oldest first; returns how many got a 2xx."""
    with store.engine.connect() as conn:
        if rule is None:
            rule = _load(conn, alert_id)[0]
        pending = conn.execute(sa.select(alert_events.c.id, alert_events.c.payload)
                               .where(alert_events.c.alert_id == alert_id, alert_events.c.delivered_at.is_(None))
                               .order_by(alert_events.c.created_at, alert_events.c.interval_start)).all()
    done = 0
    for eid, payload in pending:
        if deliver(rule, json.loads(payload), **delivery):
            done += 1
            with store.engine.begin() as conn:
                conn.execute(alert_events.update().where(alert_events.c.id == eid).values(delivered_at=datetime.now(UTC)))
    return done


def alert_history(store: MetadataStore, alert_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(alert_events).where(alert_events.c.alert_id == alert_id)
                            .order_by(alert_events.c.created_at, alert_events.c.interval_start)).all()
    return [json.loads(r.payload) | {"delivered": r.delivered_at is not None} for r in rows]


# --- management (API / CLI): every call is scoped to the caller's project ----------------------------------------

def _row_dict(r: Any, project: str, now: datetime) -> dict[str, Any]:
    snoozed = r.snoozed_until.replace(tzinfo=r.snoozed_until.tzinfo or UTC) if r.snoozed_until else None
    active_snooze = snoozed is not None and now < snoozed
    return {"id": r.id, "project": project, "name": r.name, "series": json.loads(r.series), "condition": r.condition,
            "threshold": r.threshold, "interval": "hour" if r.interval_s <= 3600 else "day", "webhook_url": r.webhook_url,
            "status": "snoozed" if active_snooze else r.status, "firing": r.status == "firing",
            "snoozed_until": snoozed.isoformat() if active_snooze and snoozed else None,
            "created_at": r.created_at.replace(tzinfo=r.created_at.tzinfo or UTC).isoformat()}


def _select(project: str | None) -> sa.Select:
    q = sa.select(alerts, projects.c.name.label("project_name")).join(projects, projects.c.id == alerts.c.project_id)
    return q.where(projects.c.name == project) if project is not None else q


def list_alerts(store: MetadataStore, project: str | None = None) -> list[dict[str, Any]]:
    """The project's alerts (every project's with ``None``: the sensor), oldest first; secrets never included.
    ``status`` is ``firing``/``resolved``, or ``snoozed`` while a snooze runs (``firing`` keeps the underlying
    state)."""
    now = datetime.now(UTC)
    with store.engine.connect() as conn:
        rows = conn.execute(_select(project).order_by(alerts.c.created_at, alerts.c.id)).all()
    return [_row_dict(r, r.project_name, now) for r in rows]


def get_alert(store: MetadataStore, project: str, alert_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        r = conn.execute(_select(project).where(alerts.c.id == alert_id)).first()
    return _row_dict(r, project, datetime.now(UTC)) if r is not None else None


def update_alert(store: MetadataStore, project: str, alert_id: str, **changes: Any) -> dict[str, Any] | None:
    """Change ``name``, ``condition``, ``threshold``, ``webhook_url`` or ``series``. A changed rule forgets the
    last evaluation (the next one compares against nothing: no ``revised`` events for the rule change itself)
    but keeps ``status``, so a firing alert resolves on its next evaluation if the new rule no longer breaches."""
    if get_alert(store, project, alert_id) is None:
        return None
    values: dict[str, Any] = {}
    if changes.get("name") is not None:
        values["name"] = str(changes["name"])
    if changes.get("condition") is not None:
        if changes["condition"] not in CONDITIONS:
            raise MetadataError(f"condition must be one of {', '.join(CONDITIONS)}")
        values["condition"] = changes["condition"]
    if changes.get("threshold") is not None:
        values["threshold"] = float(changes["threshold"])
    if changes.get("webhook_url") is not None:
        if not str(changes["webhook_url"]).startswith(("http://", "https://")):
            raise MetadataError("webhook_url must be an http(s) URL")
        values["webhook_url"] = changes["webhook_url"]
    if changes.get("series") is not None:
        values["series"] = json.dumps(changes["series"])
    if changes.get("interval") is not None:
        values["interval_s"] = int(changes["interval"].total_seconds())
    if values.keys() - {"name", "webhook_url"}:
        values["state"] = "{}"
    if values:
        with store.engine.begin() as conn:
            conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
    return get_alert(store, project, alert_id)


def snooze_alert(store: MetadataStore, project: str, alert_id: str, until: datetime | None) -> dict[str, Any] | None:
    """Snooze until a time (transitions meanwhile are recorded, not delivered); ``None`` unsnoozes."""
    if get_alert(store, project, alert_id) is None:
        return None
    snooze(store, alert_id, until)
    return get_alert(store, project, alert_id)


def delete_alert(store: MetadataStore, project: str, alert_id: str) -> bool:
    if get_alert(store, project, alert_id) is None:
        return False
    with store.engine.begin() as conn:
        conn.execute(alert_events.delete().where(alert_events.c.alert_id == alert_id))
        conn.execute(alerts.delete().where(alerts.c.id == alert_id))
    return True
