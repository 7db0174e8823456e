"""The funnel registry (eventpipe_core/metadata/funnels.py) on SQLite and PostgreSQL, the `eventpipe funnels` CLI's
errors, and the vars a marts run passes to dbt."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpipe_core.metadata import FunnelDef, FunnelRegistry, MetadataError, MetadataStore, parse_steps, parse_window
from eventpipe_core.settings import load_settings
from tests.test_collector_metadata import _postgres_store


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FunnelRegistry]:
    if request.param == "sqlite":
        store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
        store.ensure_schema()
        yield FunnelRegistry(store)
        store.dispose()
    else:
        for store in _postgres_store():
            yield FunnelRegistry(store)


def test_registry_create_list_delete_per_project(registry: FunnelRegistry) -> None:
    registry.store.create_key("shop")
    registry.store.create_key("blog")
    a = FunnelDef("shop", "cart", ("view", "cart", "buy"), 3600, "any", "product")
    b = FunnelDef("blog", "cart", ("read", "subscribe"), 86_400)  # same name, other project: allowed
    registry.create(a)
    registry.create(b)
    assert registry.list() == [b, a]  # by project, then name
    assert registry.list("shop") == [a]
    assert a.as_dbt() == {"name": "cart", "project": "shop", "steps": ["view", "cart", "buy"],
                          "conversion_window_seconds": 3600, "order": "any", "hold_constant": "product"}
    assert "hold_constant" not in b.as_dbt()
    with pytest.raises(MetadataError, match="already has a funnel named 'cart'"):
        registry.create(a)
    with pytest.raises(MetadataError, match="--project: no project named 'nowhere'"):
        registry.create(FunnelDef("nowhere", "x", ("a", "b"), 60))
    with pytest.raises(MetadataError, match="--order"):
        registry.create(FunnelDef("shop", "y", ("a", "b"), 60, "sideways"))
    assert registry.delete("shop", "cart") and not registry.delete("shop", "cart")
    assert registry.list() == [b]


def test_window_and_steps_parsing() -> None:
    assert [parse_window(w) for w in ("7d", "12h", "30m", "90s", "2w", "45")] == [604_800, 43_200, 1800, 90, 1_209_600, 45]
    for bad in ("7y", "", "d", "-1d", "0s", "367d"):
        with pytest.raises(MetadataError, match="--window"):
            parse_window(bad)
    assert parse_steps(" a , b,c ") == ("a", "b", "c")
    for bad, why in (("a", "2–20 steps"), ("a,,b", "non-empty"), ("a,b,a", "repeated: a"), (",".join("x" * 21), "2–20")):
        with pytest.raises(MetadataError, match=why):
            parse_steps(bad)


def test_marts_run_passes_the_registry_to_dbt(tmp_path: Path) -> None:
    from orchestration.dbt.assets import registry_funnels

    settings = load_settings(eventpipe_home=tmp_path)
    store = MetadataStore(settings.metadata_db_url or "")
    store.create_key("shop")
    FunnelRegistry(store).create(FunnelDef("shop", "f", ("a", "b"), 60, "exact"))
    assert registry_funnels(settings) == [{"name": "f", "project": "shop", "steps": ["a", "b"],
                                           "conversion_window_seconds": 60, "order": "exact"}]


def test_cli_errors_name_the_option(tmp_path: Path) -> None:
    env = {**os.environ, "EVENTPIPE_HOME": str(tmp_path), "DAGSTER_PORT": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "funnels", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    MetadataStore(load_settings(eventpipe_home=tmp_path).metadata_db_url or "").create_key("shop")
    base = ["create", "--project", "shop", "--name", "f"]
    for args, message in (
        (["--steps", "a"], "--steps"), (["--steps", "a,b", "--window", "soon"], "--window"),
        (["--steps", "a,b", "--order", "random"], "--order"),
    ):
        done = run(*base, *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    default = run("create", "--project", "shop", "--name", "signup_to_purchase", "--steps", "a,b")
    assert default.returncode == 2 and "default funnel" in default.stderr
    ok = run(*base, "--steps", "a,b", "--window", "2h")
    # created; with Dagster down it says exactly what to run for the days already built
    assert ok.returncode == 0 and "created funnel shop/f" in ok.stdout and "eventpipe funnels backfill" in ok.stdout
    assert "shop\tf\ta,b\t7200s\tthis" in run("list").stdout
    assert run("delete", "--project", "shop", "--name", "nope").returncode == 1
    assert run("delete", "--project", "shop", "--name", "f").returncode == 0
