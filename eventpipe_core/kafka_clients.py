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


# Seen on the embedded Tansu 0.6.0 broker: see librdkafka_producer_config.
TANSU_IDEMPOTENCE = True


def librdkafka_producer_config(settings: Settings, *, client_id: str = "eventpipe", timeout_ms: int = 15_000,
                               **extra: Any) -> dict[str, Any]:
    """confluent-kafka (librdkafka) producer settings: acks=all, idempotent, lz4.

    ``message.timeout.ms`` is the delivery deadline: a record is acknowledged or reported failed
    within it, never written after it. ``message.max.bytes`` follows ``COLLECTOR_MAX_EVENT_BYTES``
    (plus the record overhead), so an event the collector accepted is never refused by librdkafka.
    Extra keys use librdkafka's dotted names.
    """
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": TANSU_IDEMPOTENCE,
        "compression.type": "lz4",
        "linger.ms": 2,
        "batch.num.messages": 10_000,
        "message.timeout.ms": timeout_ms,
        "request.timeout.ms": max(500, min(10_000, timeout_ms - 200)),
        "message.max.bytes": settings.collector_max_event_bytes + 4096,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "socket.keepalive.enable": True,
        # TCP_NODELAY: with Nagle on (librdkafka's default) a small ProduceRequest written while the
        # previous one is unacknowledged waits for the peer's delayed ACK (40 ms on Linux) — a
        # request's acks=all round trip then jumps from a few ms to 40+ (the collector's p99).
        "socket.nagle.disable": True,
        "log.connection.close": False,  # Tansu closes idle connections; librdkafka reconnects by itself
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


def librdkafka_consumer_config(settings: Settings, *, client_id: str = "eventpipe", **extra: Any) -> dict[str, Any]:
    """confluent-kafka (librdkafka) consumer settings: no auto commit, earliest reset, the short
    group timeouts of :data:`CONSUMER_GROUP_TIMEOUTS`, and a bounded pre-fetch queue."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": client_id,
        "group.id": settings.kafka_consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": CONSUMER_GROUP_TIMEOUTS["session_timeout_ms"],
        "heartbeat.interval.ms": CONSUMER_GROUP_TIMEOUTS["heartbeat_interval_ms"],
        "max.poll.interval.ms": CONSUMER_GROUP_TIMEOUTS["max_poll_interval_ms"],
        "queued.max.messages.kbytes": 128 * 1024,  # pre-fetched records held by librdkafka: bounded
        "fetch.max.bytes": 32 * 1024 * 1024,
        "reconnect.backoff.max.ms": 1000,
        "log.connection.close": False,
    }
    return cfg | extra


def admin_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return common_config(settings) | {"request_timeout_ms": 10_000} | extra
