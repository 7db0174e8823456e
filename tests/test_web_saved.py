"""Saved charts, dashboards and web sessions in the metadata store (SQLite and PostgreSQL): project
scoping, validation naming the field, tiles of deleted charts, session sealing and expiry, and an
existing database gaining the new tables (the migration is ``create_all``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventpipe_core.metadata import ChartStore, MetadataError, MetadataStore, web_sessions
from eventpipe_core.metadata.charts import seal, unseal

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChartStore]:
    if request.param == "sqlite":
        meta = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
        meta.ensure_schema()
        meta.create_project("shop")
        meta.create_project("blog")
        yield ChartStore(meta.engine)
        meta.dispose()
        return
    schema = f"web_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    meta = MetadataStore(sa.create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"}))
    try:
        meta.ensure_schema()
        meta.create_project("shop")
        meta.create_project("blog")
        yield ChartStore(meta.engine)
    finally:
        meta.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_charts_are_scoped_and_validated(store: ChartStore) -> None:
    definition = {"steps": ["sign_up", "activate"], "window": "604800"}
    chart = store.create_chart("shop", " Signup funnel ", "funnel", definition)
    assert chart["name"] == "Signup funnel" and chart["kind"] == "funnel" and chart["definition"] == definition
    assert store.get_chart("shop", chart["id"]) == chart
    assert store.get_chart("blog", chart["id"]) is None  # another project never sees it
    assert store.list_charts("blog") == [] and [c["id"] for c in store.list_charts("shop")] == [chart["id"]]
    assert store.update_chart("blog", chart["id"], name="stolen") is None
    renamed = store.update_chart("shop", chart["id"], name="Renamed")
    assert renamed and renamed["name"] == "Renamed" and renamed["definition"] == definition

    for kwargs, field in (({"kind": "pie"}, "kind"), ({"name": ""}, "name"), ({"definition": [1]}, "definition"),
                          ({"definition": {"x": "y" * 70_000}}, "definition")):
        args = {"name": "n", "kind": "segmentation", "definition": {}} | kwargs
        with pytest.raises(MetadataError, match=field):
            store.create_chart("shop", args["name"], args["kind"], args["definition"])
    with pytest.raises(MetadataError, match="no project"):
        store.create_chart("nope", "n", "funnel", {})
    assert store.delete_chart("blog", chart["id"]) is False
    assert store.delete_chart("shop", chart["id"]) is True and store.get_chart("shop", chart["id"]) is None


def test_dashboards_hold_tiles_of_their_project(store: ChartStore) -> None:
    a = store.create_chart("shop", "A", "segmentation", {"event": "sign_up"})
    b = store.create_chart("shop", "B", "retention", {"start_event": "sign_up"})
    other = store.create_chart("blog", "C", "users", {})
    dash = store.create_dashboard("shop", "Growth", [{"chart_id": a["id"]}, {"chart_id": b["id"], "x": 6, "w": 6}])
    assert [t["chart_id"] for t in dash["layout"]] == [a["id"], b["id"]]
    assert dash["layout"][0] == {"chart_id": a["id"], "x": 0, "y": 0, "w": 6, "h": 1}
    assert store.get_dashboard("blog", dash["id"]) is None

    with pytest.raises(MetadataError, match="does not have"):  # a tile may not point at another project's chart
        store.update_dashboard("shop", dash["id"], layout=[{"chart_id": other["id"]}])
    with pytest.raises(MetadataError, match=r"layout\[0\]\.w"):
        store.create_dashboard("shop", "Bad", [{"chart_id": a["id"], "w": 13}])

    store.delete_chart("shop", a["id"])  # its tile disappears from the dashboard
    assert [t["chart_id"] for t in store.get_dashboard("shop", dash["id"])["layout"]] == [b["id"]]
    assert [d["name"] for d in store.list_dashboards("shop")] == ["Growth"] and store.list_dashboards("blog") == []
    assert store.delete_dashboard("shop", dash["id"]) is True and store.get_dashboard("shop", dash["id"]) is None


def test_sessions_seal_the_secret_and_expire(store: ChartStore) -> None:
    token, session = store.create_session("shop", "key1", "s3cr3t-value", timedelta(hours=1))
    got = store.get_session(token)
    assert got is not None and (got.project, got.api_key, got.secret_key) == ("shop", "key1", "s3cr3t-value")
    assert got.csrf_token == session.csrf_token and len(got.csrf_token) >= 24
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(web_sessions)).one()
    assert token not in str(tuple(row)) and "s3cr3t-value" not in str(tuple(row))  # neither the cookie nor the secret is stored
    assert store.get_session(token + "x") is None and store.get_session("") is None

    expired, _ = store.create_session("shop", "key1", "s", timedelta(seconds=-1))
    assert store.get_session(expired) is None
    assert store.delete_session(token) is True and store.get_session(token) is None
    assert unseal("t", seal("t", "x" * 300)) == "x" * 300 and seal("t", "abc") != seal("u", "abc")


def test_an_existing_database_gains_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    old = sa.MetaData()
    sa.Table("projects", old, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(200)),
             sa.Column("plan_enforcement", sa.String(10)), sa.Column("created_at", sa.DateTime(timezone=True)))
    old.create_all(engine)
    engine.dispose()
    meta = MetadataStore(url)
    meta.ensure_schema()
    assert {"charts", "dashboards", "web_sessions"} <= set(sa.inspect(meta.engine).get_table_names())
    meta.dispose()
