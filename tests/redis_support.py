"""The real Redis of the test machines (127.0.0.1:6379; `.ci/run` starts it if down), shared by concurrent tests:
each module works under its own key prefix, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"


def scratch_prefix(tag: str) -> Iterator[str]:
    """Yield a fresh ``test:<tag>:<random>:`` key prefix (fail loudly if Redis is down); delete its keys after."""
    import redis

    prefix = f"test:{tag}:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis at 127.0.0.1:6379 is not running (the test machines start it; .ci/run too)")
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
