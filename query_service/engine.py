"""Runs compiled queries on ClickHouse as the read-only user and says what they read.

Interface for the layers above (cache, limits, ``/api/sql``)::

    engine = Engine.from_settings(settings)
    result = engine.run(compiled)        # compiled: query_service.compile.common.Compiled
    result.rows                          # list of dicts, column name -> value
    result.partitions                    # ((project, UTC date), ...) of analytics.events the query read
    result.elapsed_s, result.query_id

A cache keys on (normalized query, project, time zone, data versions of ``result.partitions``); the
partitions are known before running (``compiled.partitions``), so a cache can look up before ``run``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from eventpipe_core.settings import Settings
from query_service.compile.common import Compiled

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
                 max_execution_s: float = 60.0):
        self._conn = {"host": host, "port": port, "username": user, "password": password, "database": database,
                      "secure": secure}
        self.database = database
        self.max_execution_s = max_execution_s
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        t = settings.clickhouse
        return cls(t.host, t.port, settings.clickhouse_readonly_user, settings.clickhouse_readonly_password,
                   t.database, t.secure, settings.query_max_execution_s)

    def client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            import clickhouse_connect

            c = clickhouse_connect.get_client(**self._conn, autogenerate_session_id=False,
                                              send_receive_timeout=int(self.max_execution_s) + 10)
            self._local.client = c
        return c

    def run(self, compiled: Compiled) -> QueryResult:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        query_id = uuid.uuid4().hex
        t0 = time.monotonic()
        try:
            result = self.client().query(compiled.sql, parameters=compiled.params,
                                         settings={**compiled.settings, "query_id": query_id})
        except ClickHouseError as exc:
            log.error("query %s failed: %s\n%s", query_id, exc, compiled.sql)
            raise QueryFailed(str(exc).splitlines()[0][:500]) from None
        columns = tuple(result.column_names)
        rows = [dict(zip(columns, r, strict=True)) for r in result.result_rows]
        return QueryResult(rows, columns, compiled.partitions, time.monotonic() - t0, query_id)
