"""Environment for running `eventpipe up` in a test: every component on a free port, state in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

from embedded.broker import free_port


def up_env(home: Path, **overrides: str) -> dict[str, str]:
    ports = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "CLICKHOUSE_URL": f"http://default:@127.0.0.1:{free_port()}/analytics",
        "COLLECTOR_PORT": str(free_port()),
        "DAGSTER_PORT": str(free_port()),
        "CONSUMER_METRICS_PORT": str(free_port()),
        "QUERY_API_PORT": str(free_port()),
        "EMBEDDED_REDIS_PORT": str(free_port()),  # the stack's own Valkey when REDIS_URL is unset
    }
    return dict(os.environ) | {"EVENTPIPE_HOME": str(home)} | ports | overrides
