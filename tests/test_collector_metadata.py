"""The metadata store on SQLite and PostgreSQL, the `keys`/`schemas` CLI, and the tracking plan modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from eventpipe_core.metadata import MetadataError, MetadataStore
from eventpipe_core.settings import Settings
from tests.collector_support import collector_settings, event, read_envelopes, serve

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"

PLAN_SCHEMA = {
    "type": "object",
    "properties": {"song": {"type": "string"}, "seconds": {"type": "integer", "minimum": 0}},
    "required": ["song"],
}


def _postgres_store() -> Iterator[MetadataStore]:
    """A store in a schema of its own in the machine's PostgreSQL, dropped afterwards."""
    schema = f"collector_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - the machines of this project run PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    engine = sa.create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    store = MetadataStore(engine)
    store.ensure_schema()
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        s = MetadataStore(f"sqlite:///{tmp_path / 'meta' / 'metadata.db'}")
        s.ensure_schema()
        yield s
        s.dispose()
    else:
        yield from _postgres_store()


def test_store_keys_lifecycle(store: MetadataStore) -> None:
    k1 = store.create_key("shop")
    k2 = store.create_key("shop")
    k3 = store.create_key("blog")
    assert len({k1, k2, k3}) == 3 and all(len(k) == 32 for k in (k1, k2, k3))
    assert store.list_projects() == ["blog", "shop"]
    assert store.project_for_key(k1) == "shop" and store.project_for_key(k3) == "blog"
    assert store.project_for_key("nope") is None
    assert {k.api_key for k in store.list_keys("shop")} == {k1, k2}
    assert store.revoke_key(k1) is True
    assert store.revoke_key(k1) is False
    assert store.project_for_key(k1) is None and store.project_for_key(k2) == "shop"
    revoked = {k.api_key: k.revoked_at for k in store.list_keys()}
    assert revoked[k1] is not None and revoked[k2] is None and revoked[k3] is None


def test_store_tracking_plan(store: MetadataStore) -> None:
    store.create_project("music")
    assert store.plan("music").enforcement == "off" and store.plan("music").schemas == {}
    store.set_schema("music", "Song Played", PLAN_SCHEMA)
    store.set_schema("music", "Song Played", PLAN_SCHEMA | {"additionalProperties": False})  # replace
    store.set_schema("music", "Paused", {"type": "object"})
    store.set_enforcement("music", "reject")
    plan = store.plan("music")
    assert plan.enforcement == "reject"
    assert plan.schemas == {"Paused": {"type": "object"}, "Song Played": PLAN_SCHEMA | {"additionalProperties": False}}
    assert store.delete_schema("music", "Paused") and not store.delete_schema("music", "Paused")
    with pytest.raises(MetadataError, match="off, flag, reject"):
        store.set_enforcement("music", "loud")
    with pytest.raises(MetadataError, match="not a valid JSON Schema"):
        store.set_schema("music", "Bad", {"type": "nope"})
    with pytest.raises(MetadataError, match="no project"):
        store.set_schema("nowhere", "x", {"type": "object"})
    with pytest.raises(MetadataError, match="no project"):
        store.plan("nowhere")


def test_collector_keys_on_each_database(store: MetadataStore, settings: Settings) -> None:
    key = store.create_key(f"db-{uuid.uuid4().hex[:8]}")
    with serve(collector_settings(settings), store) as api:
        body = {"api_key": key, "events": [event(1)]}
        assert httpx.post(f"{api.url}/2/httpapi", json=body, timeout=30).status_code == 200
        store.revoke_key(key)
        r = httpx.post(f"{api.url}/2/httpapi", json=body, timeout=30)
        assert (r.status_code, r.json()) == (400, {"code": 400, "error": f"Invalid API key: {key}"})


# --- the CLI -----------------------------------------------------------------------------------
def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`eventpipe …` as a real process (the console entry point, environment-only configuration)."""
    return subprocess.run([sys.executable, "-m", "eventpipe_cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120, input=stdin)


def _cli_fast(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The same commands in this process (importing every component's CLI costs seconds per process)."""
    from typer.testing import CliRunner

    from eventpipe_cli.main import app
    from eventpipe_core.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env=env, input=stdin)
    finally:
        get_settings.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli_env(service_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), **service_env, "METADATA_DB_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


def test_cli_keys_and_schemas_drive_the_collector(cli_env: dict[str, str], tmp_path: Path, settings: Settings) -> None:
    project = f"cli-{uuid.uuid4().hex[:8]}"
    created = _cli(cli_env, "keys", "create", "--project", project)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    listed = _cli_fast(cli_env, "keys", "list", "--project", project)
    assert listed.returncode == 0 and f"{key}\t{project}\t" in listed.stdout and "active" in listed.stdout

    schema_file = tmp_path / "song.json"
    schema_file.write_text(json.dumps(PLAN_SCHEMA))
    assert _cli_fast(cli_env, "schemas", "set", "Song Played", str(schema_file), "--project", project).returncode == 0
    assert _cli_fast(cli_env, "schemas", "set", "Paused", "-", "--project", project, stdin='{"type": "object"}').returncode == 0
    bad = _cli_fast(cli_env, "schemas", "set", "X", "-", "--project", project, stdin='{"type": 5}')
    assert bad.returncode == 1 and "not a valid JSON Schema" in bad.stderr
    got = _cli_fast(cli_env, "schemas", "get", "Song Played", "--project", project)
    assert got.returncode == 0 and json.loads(got.stdout) == PLAN_SCHEMA
    assert _cli_fast(cli_env, "schemas", "enforce", "reject", "--project", project).returncode == 0
    assert _cli_fast(cli_env, "schemas", "enforce", "sometimes", "--project", project).returncode == 1
    listing = _cli_fast(cli_env, "schemas", "list", "--project", project)
    assert listing.stdout.splitlines() == ["enforcement\treject", "schema\tPaused", "schema\tSong Played"]

    store = MetadataStore(cli_env["METADATA_DB_URL"])
    try:
        with serve(collector_settings(settings), store) as api:
            bad_event = event(1, event_type="Song Played", event_properties={"seconds": -3})
            r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [bad_event]}, timeout=30)
            assert r.status_code == 400 and r.json()["events_with_invalid_fields"] == {"event_properties": [0]}
            revoked = _cli_fast(cli_env, "keys", "revoke", key)
            assert revoked.returncode == 0, revoked.stderr
            ok_event = event(2, event_type="Song Played", event_properties={"song": "x"})
            r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": [ok_event]}, timeout=30)
            assert (r.status_code, r.json()["error"]) == (400, f"Invalid API key: {key}")
    finally:
        store.dispose()
    assert _cli_fast(cli_env, "keys", "revoke", key).returncode == 1  # already revoked


# --- tracking plan modes through the collector ---------------------------------------------------
@pytest.mark.parametrize("mode", ["off", "flag", "reject"])
def test_tracking_plan_modes(mode: str, tmp_path: Path, settings: Settings) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'plan.db'}")
    project = f"plan-{mode}-{uuid.uuid4().hex[:8]}"
    key = store.create_key(project)
    store.set_schema(project, "Song Played", PLAN_SCHEMA)
    store.set_enforcement(project, mode)
    events = [
        event(0, event_type="Song Played", event_properties={"song": "Blue", "seconds": 10}),  # conforms
        event(1, event_type="Song Played", event_properties={"seconds": "ten"}),  # no song, wrong type
        event(2, event_type="Unplanned", event_properties={"anything": True}),  # no schema: not checked
        event(3, event_type="Song Played"),  # no properties at all: "song" missing
    ]
    try:
        with serve(collector_settings(settings), store) as api:
            r = httpx.post(f"{api.url}/2/httpapi", json={"api_key": key, "events": events}, timeout=30)
            metrics = httpx.get(f"{api.url}/metrics").text
    finally:
        store.dispose()
    if mode == "reject":
        body = r.json()
        assert r.status_code == 400
        assert set(body) == {"code", "error", "events_with_invalid_fields", "plan_violations"}
        assert body["error"] == "Event properties violate the tracking plan"
        assert body["events_with_invalid_fields"] == {"event_properties": [1, 3]}
        assert set(body["plan_violations"]) == {"1", "3"}
        assert all(m.startswith("event_properties: ") for v in body["plan_violations"].values() for m in v)
        assert 'eventpipe_collector_plan_violations_total{mode="reject"} 2.0' in metrics
        return
    assert r.status_code == 200, r.text
    found = {env["event"]["user_id"]: env for _, env in read_envelopes(settings, lambda e: e["project"] == project, 4)}
    assert len(found) == 4
    flagged = {u: env["plan_violations"] for u, env in found.items()}
    if mode == "off":
        assert all(v == [] for v in flagged.values())
    else:
        assert flagged["user-00000"] == [] and flagged["user-00002"] == []
        assert flagged["user-00001"] and "song" in flagged["user-00001"][0]
        assert flagged["user-00003"] and flagged["user-00003"][0].startswith("event_properties: ")
        assert 'eventpipe_collector_plan_violations_total{mode="flag"} 2.0' in metrics
