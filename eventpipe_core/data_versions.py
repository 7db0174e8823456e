"""Data versions: one counter per (table, project, UTC day), bumped by every load that rewrites the day.

Why: the query service caches answers in Redis keyed on the versions of exactly the partitions a query
reads, so an answer stays cached until a load rewrites one of its days — and exactly then it is recomputed
(no time-based staleness). Writers (the hourly ``clickhouse_events`` asset, the dbt marts runs, Spark
backfills, cohort snapshots) call :func:`bump`; the query service reads with :func:`fields_for` + HMGET.

Layout (under ``DATA_VERSIONS_PREFIX``, default ``eventpipe:dv:``): one Redis hash per (table, project),
``{prefix}{table}:{project}``, field ``YYYY-MM-DD`` -> counter, plus field ``*`` bumped with every day of
the hash (what a query reading *all* history — first-seen, cohorts — depends on). A load that does not
know its projects bumps the project ``*`` hash, which every reader reads too.

A bump happens **after** the load is visible: a query that started before it and finishes after stores its
answer under the old versions, which no later request asks for. Version hashes never expire; the cache's
entries do (TTL), so Redis must evict only keys with a TTL (``maxmemory-policy volatile-lru`` or
``noeviction``; the embedded stack's server is started so).

Without ``REDIS_URL`` there is no cache and nothing to invalidate: :func:`bump` is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date
from typing import Any

from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)

EVENTS = "events"  # analytics.events (and the enriched lake days read in its place)
ALL_PROJECTS = "*"
ALL_DAYS = "*"


def hash_key(prefix: str, table: str, project: str) -> str:
    return f"{prefix}{table}:{project}"


def fields_for(prefix: str, table: str, project: str, days: Iterable[date], all_history: bool = False
               ) -> list[tuple[str, list[str]]]:
    """(hash key, fields) pairs whose values are the versions a query of ``project`` over ``days`` depends on
    (its own hash and the all-projects one)."""
    fields = [d.isoformat() for d in days]
    if all_history:
        fields.append(ALL_DAYS)
    if not fields:
        return []
    return [(hash_key(prefix, table, project), fields), (hash_key(prefix, table, ALL_PROJECTS), fields)]


def bump_with(client: Any, prefix: str, table: str, days: Iterable[date], projects: Iterable[str] | None = None) -> int:
    """Increment the versions of ``days`` of ``table`` for ``projects`` (None = all projects) in one
    transaction; returns how many (project, day) versions moved. ``client`` is a redis-py client."""
    day_fields = sorted({d.isoformat() for d in days})
    if not day_fields:
        return 0
    targets = sorted(set(projects)) if projects is not None else [ALL_PROJECTS]
    pipe = client.pipeline(transaction=True)
    for project in targets:
        key = hash_key(prefix, table, project)
        for f in day_fields:
            pipe.hincrby(key, f, 1)
        pipe.hincrby(key, ALL_DAYS, 1)
    pipe.execute()
    return len(targets) * len(day_fields)


def bump(settings: Settings, table: str, days: Iterable[date], projects: Iterable[str] | None = None) -> int:
    """:func:`bump_with` on ``REDIS_URL`` (no-op without it). Raises when Redis fails: a load whose bump did not
    happen would leave stale cached answers, so the run fails and its retry (loads are idempotent) bumps again."""
    if not settings.redis_url:
        return 0
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        n = bump_with(client, settings.data_versions_prefix, table, days, projects)
    finally:
        client.close()
    log.info("data versions: bumped %d (project, day) of %s", n, table)
    return n
