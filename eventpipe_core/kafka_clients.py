"""The one place Kafka clients get their settings from.

The embedded Tansu broker takes ~23 s to complete a consumer-group join with kafka-python's
default timeouts and ~3 s with a short session timeout and heartbeat (DESIGN §4), so every
consumer in eventpipe is built from :func:`consumer_config`.
"""

from __future__ import annotations

from typing import Any

from eventpipe_core.settings import Settings

# Short session/heartbeat: fast group joins on Tansu, still sane on real Kafka.
CONSUMER_GROUP_TIMEOUTS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 300_000,
    "request_timeout_ms": 30_000,
}


def common_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers, "client_id": "eventpipe"}


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """acks=all and bounded retries: a produce is reported done only when the broker has it."""
    cfg = common_config(settings) | {
        "acks": "all",
        "retries": 5,
        "linger_ms": 5,
        "max_block_ms": 10_000,
        "request_timeout_ms": 10_000,
    }
    return cfg | extra


def consumer_config(settings: Settings, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Manual commits, earliest reset: nothing accepted is ever skipped."""
    cfg = common_config(settings) | CONSUMER_GROUP_TIMEOUTS | {
        "group_id": group_id if group_id is not None else settings.kafka_consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    return cfg | extra


def admin_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return common_config(settings) | {"request_timeout_ms": 10_000} | extra
