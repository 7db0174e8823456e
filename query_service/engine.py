"""Runs compiled queries on ClickHouse as the read-only user and says what they read.

Interface for the layers above (cache, limits, ``/api/sql``)::

    engine = Engine.from_settings(settings)
    result = engine.run(compiled)        # compiled: query_service.compile.common.Compiled
    result.rows                          # list of dicts, column name -> value
    result.partitions                    # ((project, UTC date), ...) of analytics.events the query read
    result.elapsed_s, result.query_id
    engine.hot_from(), engine.lake_path  # routing inputs the app puts into every query's Scope

A cache keys on (normalized query, project, time zone, data versions of ``result.partitions``); the
partitions are known before running (``compiled.partitions``), so a cache can look up before ``run``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from eventpipe_core.settings import Settings
from query_service.compile.common import LAKE_KEY_PARAM, LAKE_SECRET_PARAM, Compiled

log = logging.getLogger(__name__)


class QueryFailed(RuntimeError):
    """ClickHouse refused or failed a query (a bug or an overloaded server, never bad user input)."""


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, Any]]
    columns: tuple[str, ...]
    partitions: tuple[tuple[str, date], ...]
    elapsed_s: float
    query_id: str


class Engine:
    """A pool of clickhouse-connect clients (one per thread) on the read-only user of CLICKHOUSE_URL's server."""

    def __init__(self, host: str, port: int, user: str, password: str, database: str, secure: bool = False,
                 max_execution_s: float = 60.0, *, lake_user: str | None = None, lake_password: str = "",
                 lake_path: str | None = None, ttl_days: int | None = None,
                 lake_s3_credentials: tuple[str, str] | None = None):
        self._conn = {"host": host, "port": port, "username": user, "password": password, "database": database,
                      "secure": secure}
        self._lake_conn = {**self._conn, "username": lake_user or user, "password": lake_password if lake_user else password}
        self.database = database
        self.max_execution_s = max_execution_s
        # the lake: a local directory (file:// LAKE_URL) or the http(s) URL of an S3 bucket/prefix (s3:// LAKE_URL,
        # read with s3() and ``lake_s3_credentials``); None = no lake routing
        self.lake_path = lake_path
        self._lake_s3_credentials = lake_s3_credentials
        self.ttl_days = ttl_days
        self._local = threading.local()

    def hot_from(self, today: date | None = None) -> date | None:
        """First UTC day ``analytics.events`` still holds (its TTL drops days with event_date + TTL <= today);
        compiled queries read earlier days from the lake."""
        if self.ttl_days is None or self.lake_path is None:
            return None
        today = today or datetime.now(UTC).date()
        return today - timedelta(days=self.ttl_days - 1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """Hot reads as the read-only user; lake reads (``file()``, which readers may not use) as chserver's service
        user (read-only plus ``file()``/``s3()`` on the lake) when the embedded server runs and one is configured,
        else as the CLICKHOUSE_URL user. A ``file://`` LAKE_URL must be a directory on the ClickHouse host; an
        ``s3://`` one is read with ``s3()`` at AWS_ENDPOINT_URL (else AWS's regional endpoint) with the AWS_* keys."""
        t = settings.clickhouse
        service = settings.clickhouse_service_target if settings.clickhouse_embedded else None
        lake_t = service or t
        lake_path, creds = lake_location(settings)
        return cls(t.host, t.port, settings.clickhouse_readonly_user, settings.clickhouse_readonly_password,
                   t.database, t.secure, settings.query_max_execution_s, lake_user=lake_t.user, lake_password=lake_t.password,
                   lake_path=lake_path, ttl_days=settings.clickhouse_ttl_days, lake_s3_credentials=creds)

    def client(self, lake: bool = False) -> Any:
        name = "lake_client" if lake else "client"
        c = getattr(self._local, name, None)
        if c is None:
            import clickhouse_connect

            c = clickhouse_connect.get_client(**(self._lake_conn if lake else self._conn), autogenerate_session_id=False,
                                              send_receive_timeout=int(self.max_execution_s) + 10)
            setattr(self._local, name, c)
        return c

    def run(self, compiled: Compiled) -> QueryResult:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        query_id = uuid.uuid4().hex
        t0 = time.monotonic()
        params = compiled.params
        if compiled.reads_lake and LAKE_KEY_PARAM in compiled.sql:  # s3() on the lake: bind the keys here only
            key, secret = self._lake_s3_credentials or ("", "")
            params = {**params, LAKE_KEY_PARAM: key, LAKE_SECRET_PARAM: secret}
        try:
            result = self.client(compiled.reads_lake).query(compiled.sql, parameters=params,
                                         settings={**compiled.settings, "query_id": query_id})
        except ClickHouseError as exc:
            log.error("query %s failed: %s\n%s", query_id, exc, compiled.sql)
            raise QueryFailed(str(exc).splitlines()[0][:500]) from None
        columns = tuple(result.column_names)
        rows = [dict(zip(columns, r, strict=True)) for r in result.result_rows]
        return QueryResult(rows, columns, compiled.partitions, time.monotonic() - t0, query_id)


def lake_location(settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """(where compiled queries read the lake, S3 credentials): a directory for ``file://``; for ``s3://bucket/prefix``
    the path-style URL at AWS_ENDPOINT_URL, or the virtual-hosted AWS URL — both are prefixes chserver's service
    user may read with ``s3()`` (chserver/auth.py)."""
    lake = settings.lake_url or ""
    parts = urlsplit(lake)
    if parts.scheme == "file":
        return parts.path, None
    if parts.scheme != "s3":
        return None, None
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if settings.aws_endpoint_url:
        url = f"{settings.aws_endpoint_url.rstrip('/')}/{bucket}/{prefix}".rstrip("/")
    else:
        url = f"https://{bucket}.s3.{settings.aws_region}.amazonaws.com/{prefix}".rstrip("/")
    creds = ((settings.aws_access_key_id or "", settings.aws_secret_access_key or "")
             if settings.aws_access_key_id else None)
    return url, creds
