"""Alert core (eventpipe_core.alerting) with a real local webhook receiver: "error rate > 5 %" fires once when
crossed, not again for the same interval, resolves when it drops, a late batch revising a past interval is
recorded and delivered; signatures verify; a failing receiver is retried with backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from embedded.broker import free_port
from eventpipe_core.alerting import AlertState, Rule, deliver, evaluate

H = timedelta(hours=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SECRET = "s3cr3t"


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict, dict]] = []
        self.fail_next = 0


@pytest.fixture()
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if rec.fail_next:
                rec.fail_next -= 1
                self.send_response(503)
                self.end_headers()
                return
            rec.received.append((dict(self.headers), json.loads(body) | {"_raw": body.decode()}))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec, f"http://127.0.0.1:{port}/hook"
    server.shutdown()
    server.server_close()


def error_rate(errors: list[int], totals: list[int]) -> list[tuple[datetime, float]]:
    return [(T0 + i * H, e / t) for i, (e, t) in enumerate(zip(errors, totals, strict=True))]


def run(rule: Rule, state: AlertState, series: list[tuple[datetime, float]], now: datetime) -> list[dict]:
    events = state.update(rule, evaluate(rule, series, now), now)
    for e in events:
        if not e["snoozed"]:
            assert deliver(rule, e, backoff_s=0.01)
    return events


def test_error_rate_alert_fires_once_resolves_and_records_a_revision(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rule = Rule("err-rate", "above", 0.05, H, url, SECRET)
    state = AlertState()
    totals = [100] * 6
    # hours 0-2 fine; hour 3 at 8 %; hour 4 (still running at `now`) must not count
    series = error_rate([1, 2, 3, 8, 20], totals[:5])
    assert run(rule, state, series, T0 + 4 * H + timedelta(minutes=30))[0]["type"] == "firing"
    assert len(rec.received) == 1 and rec.received[0][1]["interval_start"] == (T0 + 3 * H).isoformat()
    # the same data again, later in the same (incomplete) hour: nothing new
    assert run(rule, state, series, T0 + 4 * H + timedelta(minutes=50)) == []
    # hour 4 completes, still above: still firing, nothing delivered
    assert run(rule, state, error_rate([1, 2, 3, 8, 7], totals[:5]), T0 + 5 * H) == []
    # hour 5 drops to 2 %: resolved once
    events = run(rule, state, error_rate([1, 2, 3, 8, 7, 2], totals), T0 + 6 * H)
    assert [e["type"] for e in events] == ["resolved"] and state.status == "resolved"
    # a late batch of successful events revises hour 3 down to 4 %: history updated, delivered once
    late = error_rate([1, 2, 3, 8, 7, 2], [100, 100, 100, 200, 100, 100])
    events = run(rule, state, late, T0 + 6 * H)
    assert [(e["type"], e["interval_start"], e["old_value"], e["value"]) for e in events] == [
        ("revised", (T0 + 3 * H).isoformat(), 0.08, 0.04)]
    assert run(rule, state, late, T0 + 6 * H) == []
    assert [e["type"] for e in state.history] == ["firing", "resolved", "revised"]
    assert [r[1]["type"] for r in rec.received] == ["firing", "resolved", "revised"]
    for headers, body in rec.received:
        want = "sha256=" + hmac.new(SECRET.encode(), body["_raw"].encode(), hashlib.sha256).hexdigest()
        assert headers["X-Eventpipe-Signature"] == want and headers["X-Eventpipe-Event-Id"] == body["id"]


def test_snooze_change_and_below_rules_and_retries(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rule = Rule("drop", "below", 50, H, url, SECRET)
    state = AlertState(snoozed_until=T0 + 10 * H)
    events = run(rule, state, [(T0, 60.0), (T0 + H, 40.0)], T0 + 2 * H)
    assert [e["type"] for e in events] == ["firing"] and events[0]["snoozed"] and rec.received == []
    change = Rule("jump", "change", 0.5, H, url, SECRET)
    ev = evaluate(change, [(T0, 100.0), (T0 + H, 120.0), (T0 + 2 * H, 200.0)], T0 + 3 * H)
    assert [b for _, b in ev.values()] == [False, False, True]
    rec.fail_next = 2  # two 503s, then success: delivered on the third attempt
    assert deliver(change, {"id": "x1", "type": "firing"}, backoff_s=0.01)
    assert [r[1]["id"] for r in rec.received] == ["x1"]
    with pytest.raises(ValueError):
        Rule("bad", "sideways")


def test_persisted_alert_survives_processes_and_redelivers_only_undelivered(receiver: tuple[Receiver, str],
                                                                            tmp_path: object) -> None:
    from eventpipe_core.metadata import MetadataStore
    from eventpipe_core.metadata.alerts import alert_history, create_alert, run_alert

    rec, url = receiver
    db = f"sqlite:///{tmp_path}/meta.db"
    store = MetadataStore(db)
    store.ensure_schema()
    store.create_project("alerts-shop")
    aid, secret = create_alert(store, "alerts-shop", "error rate > 5%", series={"chart": "c1", "series": 0},
                               condition="above", threshold=0.05, interval=H, webhook_url=url)
    series = error_rate([1, 8], [100, 100])
    rec.fail_next = 99  # the receiver is down: the transition is recorded, not delivered
    assert [e["type"] for e in run_alert(store, aid, series, T0 + 2 * H, attempts=2, backoff_s=0.01)] == ["firing"]
    assert rec.received == [] and alert_history(store, aid)[0]["delivered"] is False
    store.dispose()
    rec.fail_next = 0
    store = MetadataStore(db)  # a new sensor tick (fresh process state): nothing re-fires, the pending one is delivered
    assert run_alert(store, aid, series, T0 + 2 * H, backoff_s=0.01) == []
    assert [r[1]["type"] for r in rec.received] == ["firing"]
    want = "sha256=" + hmac.new(secret.encode(), rec.received[0][1]["_raw"].encode(), hashlib.sha256).hexdigest()
    assert rec.received[0][0]["X-Eventpipe-Signature"] == want
    assert run_alert(store, aid, series, T0 + 2 * H, backoff_s=0.01) == [] and len(rec.received) == 1
    assert [e["type"] for e in run_alert(store, aid, error_rate([1, 8, 2], [100] * 3), T0 + 3 * H)] == ["resolved"]
    assert [(e["type"], e["delivered"]) for e in alert_history(store, aid)] == [("firing", True), ("resolved", True)]
    store.dispose()


def test_a_revision_of_the_latest_interval_resolves_with_its_old_value(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rule = Rule("latest", "above", 0.05, H, url, SECRET)
    state = AlertState()
    now = T0 + 2 * H + timedelta(minutes=5)
    assert [e["type"] for e in run(rule, state, error_rate([1, 8], [100, 100]), now)] == ["firing"]
    # a late batch revises hour 1 (still the latest complete one) to 4 %: resolved, carrying the revised value
    events = run(rule, state, error_rate([1, 8], [100, 200]), now + timedelta(minutes=10))
    assert [(e["type"], e["interval_start"], e["old_value"], e["value"]) for e in events] == [
        ("resolved", (T0 + H).isoformat(), 0.08, 0.04)]
    # revised up again: re-fires, with the revision
    events = run(rule, state, error_rate([1, 12], [100, 200]), now + timedelta(minutes=20))
    assert [(e["type"], e["old_value"], e["value"]) for e in events] == [("firing", 0.04, 0.06)]
    assert [r[1]["type"] for r in rec.received] == ["firing", "resolved", "firing"]
    # a plain new interval resolving carries no old value
    events = run(rule, state, error_rate([1, 12, 1], [100, 200, 100]), T0 + 3 * H)
    assert [(e["type"], e["old_value"]) for e in events] == [("resolved", None)]


@pytest.fixture(params=["sqlite", "postgresql"])
def meta_store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[object]:
    import uuid

    import sqlalchemy as sa

    from eventpipe_core.metadata import MetadataStore

    if request.param == "sqlite":
        store = MetadataStore(f"sqlite:///{tmp_path}/meta.db")
        store.ensure_schema()
        yield store
        store.dispose()
        return
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    schema = f"alerts_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    store = MetadataStore(sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"}))
    try:
        store.ensure_schema()
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_alert_management_is_project_scoped(meta_store: object, receiver: tuple[Receiver, str]) -> None:
    from eventpipe_core.metadata import MetadataError
    from eventpipe_core.metadata.alerts import (
        alert_history,
        create_alert,
        delete_alert,
        get_alert,
        list_alerts,
        run_alert,
        snooze_alert,
        update_alert,
    )

    store = meta_store
    rec, url = receiver
    store.create_project("shop")  # type: ignore[attr-defined]
    store.create_project("blog")  # type: ignore[attr-defined]
    aid, _ = create_alert(store, "shop", "err", series={"kind": "segmentation"}, condition="above", threshold=0.05,
                          interval=H, webhook_url=url)
    assert [a["id"] for a in list_alerts(store, "shop")] == [aid] and list_alerts(store, "blog") == []
    assert [a["project"] for a in list_alerts(store)] == ["shop"]
    assert get_alert(store, "blog", aid) is None and update_alert(store, "blog", aid, name="x") is None
    assert snooze_alert(store, "blog", aid, T0) is None and delete_alert(store, "blog", aid) is False
    with pytest.raises(MetadataError):
        update_alert(store, "shop", aid, condition="sideways")
    assert [e["type"] for e in run_alert(store, aid, error_rate([1, 8], [100, 100]), T0 + 2 * H, backoff_s=0.01)] == ["firing"]
    assert get_alert(store, "shop", aid)["status"] == "firing"  # type: ignore[index]
    # a threshold change forgets the last evaluation but keeps the status: it resolves if it no longer breaches
    changed = update_alert(store, "shop", aid, threshold=0.1)
    assert changed is not None and changed["threshold"] == 0.1 and changed["firing"]
    assert [e["type"] for e in run_alert(store, aid, error_rate([1, 8], [100, 100]), T0 + 2 * H, backoff_s=0.01)] == [
        "resolved"]
    until = datetime.now(UTC) + timedelta(hours=1)
    snoozed = snooze_alert(store, "shop", aid, until)
    assert snoozed is not None and snoozed["status"] == "snoozed"
    assert datetime.fromisoformat(snoozed["snoozed_until"]) == until
    assert snooze_alert(store, "shop", aid, None)["status"] == "resolved"  # type: ignore[index]
    assert [e["type"] for e in alert_history(store, aid)] == ["firing", "resolved"]
    assert [r[1]["type"] for r in rec.received] == ["firing", "resolved"]
    assert delete_alert(store, "shop", aid) is True and get_alert(store, "shop", aid) is None
    assert alert_history(store, aid) == []
