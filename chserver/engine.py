"""The chDB engine behind the server: one per process, owning its data dir, used by many threads.

Why connections are handled the way they are (verified with chdb 4.4):

* two ``chdb.connect(path)`` connections on the same path run queries concurrently, while one
  connection runs its queries one after another — so each request gets its own connection;
* ``SET`` and ``USE`` stay on the connection that ran them — so a connection on which a request
  changed anything (URL settings, ``database``, read-only mode, a SET/USE/temporary-table statement)
  is closed after that request instead of going back to the idle pool. Opening a connection costs
  ~0.2 ms, so this is cheaper than resetting and can never leak state into another request;
* requests carrying ``session_id`` get ClickHouse's HTTP-session semantics instead: one connection
  per (user, session_id), kept between requests, so SET, USE and temporary tables persist within the
  session (dbt-clickhouse relies on temporary tables, e.g. for unit tests). A session serves one
  request at a time (a concurrent one gets SESSION_IS_LOCKED) and closes after ``session_timeout``
  seconds (default 60) without requests. Inside a session, URL settings and ``database`` apply to
  the session from then on (a simplification of ClickHouse, where they are per query);
* chDB releases the GIL while a query runs, so a long query in a worker thread does not stall the
  event loop that answers ``/ping``.

A long-lived *anchor* connection keeps the engine open for the life of the server; ``close`` releases
it last, after every worker has finished, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb

from chserver.errors import (
    ACCESS_DENIED,
    BAD_ARGUMENTS,
    READONLY,
    SYNTAX_ERROR,
    UNKNOWN_FORMAT,
    ClickHouseError,
)
from chserver.sql import READ_ONLY_KINDS, RESTRICTED_FUNCTIONS, Statement, analyze

log = logging.getLogger(__name__)

LOCK_FILE = "chserver.lock"
HEAD_WINDOW = 1 << 20  # an INSERT's statement must start within the first MiB of the request
INSERT_CHUNK = 8 << 20


class DataDirInUseError(RuntimeError):
    """Another chserver already owns this data dir."""


class DataDirLock:
    """An fcntl lock on ``<data dir>/chserver.lock``: a second server on the same dir fails fast.

    The kernel drops the lock when the process dies, so a crash never leaves a stale lock behind.
    """

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"data dir {self.path.parent} is already in use by another chserver (pid {holder}); "
                "stop it or start this one with another --data"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class QueryRequest:
    """One HTTP request, decoded: the statement text/data and its per-request context."""

    raw: bytes  # query parameter + "\n" + body (ClickHouse's rule), already decompressed
    user: str = "default"
    database: str | None = None
    default_format: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    readonly: int = 0  # 0 = read-write, 2 = reads + settings, 1 = reads only
    restricted_functions: bool = False  # refuse file/url/remote/… table functions (read-only users)
    session_id: str | None = None
    session_timeout: int = 60
    session_check: bool = False  # the session must already exist


@dataclass
class Session:
    """A connection kept for one (user, session_id) between requests."""

    conn: Any
    timeout: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return now - self.last_used > self.timeout


@dataclass
class QueryResult:
    body: bytes
    format: str
    summary: dict[str, str]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """chDB on ``data_dir`` plus a thread pool and idle connections for concurrent requests."""

    def __init__(self, data_dir: Path, max_concurrent_queries: int = 16, databases: tuple[str, ...] = ()):
        data_dir = data_dir.expanduser().absolute()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._lock = DataDirLock(data_dir).acquire()
        try:
            self._path = str(data_dir)
            self._anchor = chdb.connect(self._path)
            version, tz = self._scalar_row("SELECT version(), timezone()")
            self.version: str = version
            self.timezone: str = tz
            rows = self._rows("SELECT name, is_input, is_output FROM system.formats")
            self.output_formats = {r[0].lower(): r[0] for r in rows if r[2] == "1"}
            self.input_formats = {r[0].lower(): r[0] for r in rows if r[1] == "1"}
            self.all_formats = {**self.input_formats, **self.output_formats}
            for db in databases:
                if db and db != "default":
                    self._anchor.query(f"CREATE DATABASE IF NOT EXISTS {_ident(db)}")
        except BaseException:
            self._lock.release()
            raise
        self.max_concurrent_queries = max_concurrent_queries
        self.executor = ThreadPoolExecutor(max_workers=max_concurrent_queries, thread_name_prefix="chdb")
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()
        self._sessions: dict[tuple[str, str], Session] = {}
        self._sessions_lock = threading.Lock()
        self._closed = False

    # --- helpers -----------------------------------------------------------------------------------
    def _rows(self, sql: str) -> list[list[str]]:
        text = self._anchor._conn.query(sql, "TabSeparated", params={}).bytes().decode()
        return [line.split("\t") for line in text.splitlines()]

    def _scalar_row(self, sql: str) -> list[str]:
        return self._rows(sql)[0]

    def _acquire(self) -> Any:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return chdb.connect(self._path)

    def _release(self, conn: Any, reusable: bool) -> None:
        if reusable and not self._closed:
            with self._idle_lock:
                if len(self._idle) < self.max_concurrent_queries:
                    self._idle.append(conn)
                    return
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a connection that fails to close is dropped anyway
            log.debug("closing a chDB connection failed", exc_info=True)

    def _session(self, req: QueryRequest) -> Session:
        """The request's session, created on first use; expired sessions are closed here."""
        assert req.session_id is not None
        from chserver.errors import SESSION_IS_LOCKED, SESSION_NOT_FOUND

        now = time.monotonic()
        key = (req.user, req.session_id)
        with self._sessions_lock:
            for k, old in list(self._sessions.items()):
                if k != key and old.expired(now) and old.lock.acquire(blocking=False):
                    del self._sessions[k]
                    self._release(old.conn, reusable=False)
            session = self._sessions.get(key)
            if session is not None and session.expired(now) and session.lock.acquire(blocking=False):
                del self._sessions[key]
                self._release(session.conn, reusable=False)
                session = None
            if session is None:
                if req.session_check:
                    raise ClickHouseError(SESSION_NOT_FOUND, f"Session {req.session_id} not found")
                session = Session(conn=chdb.connect(self._path), timeout=req.session_timeout)
                self._sessions[key] = session
        if not session.lock.acquire(blocking=False):
            raise ClickHouseError(SESSION_IS_LOCKED, f"Session {req.session_id} is locked by a concurrent client.")
        session.timeout = req.session_timeout
        return session

    # --- the request path --------------------------------------------------------------------------
    def analyze(self, raw: bytes) -> Statement:
        window = raw[:HEAD_WINDOW].decode("latin-1")
        stmt = analyze(window, self.all_formats)
        if len(raw) > HEAD_WINDOW and not (stmt.kind == "INSERT" and stmt.insert_format):
            stmt = analyze(raw.decode("latin-1"), self.all_formats)
        return stmt

    def check_allowed(self, req: QueryRequest, stmt: Statement) -> None:
        """Read-only users and read-only requests (GET, readonly=N) may only read."""
        if req.readonly and stmt.kind not in READ_ONLY_KINDS:
            raise ClickHouseError(READONLY, f"{req.user}: Cannot execute query in readonly mode.")
        if req.restricted_functions:
            denied = sorted(stmt.functions & RESTRICTED_FUNCTIONS)
            if denied:
                raise ClickHouseError(
                    ACCESS_DENIED, f"{req.user}: Not enough privileges: table function {denied[0]}() is not allowed for this user"
                )
            if stmt.into_outfile:
                raise ClickHouseError(ACCESS_DENIED, f"{req.user}: Not enough privileges: INTO OUTFILE is not allowed")

    def execute(self, req: QueryRequest) -> QueryResult:
        """Run one request on its own connection (blocking; call from ``self.executor``)."""
        if self._closed:
            raise ClickHouseError(210, "Server is shutting down", name="NETWORK_ERROR")
        if not req.raw.strip():
            raise ClickHouseError(SYNTAX_ERROR, "Empty query")
        stmt = self.analyze(req.raw)
        self.check_allowed(req, stmt)
        out_format = stmt.output_format
        if out_format is None:
            wanted = req.default_format or "TabSeparated"
            out_format = self.output_formats.get(wanted.lower())
            if out_format is None:
                raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown output format {wanted}")

        prelude: list[str] = []
        if req.readonly:
            prelude.append(f"SET readonly = {int(req.readonly)}")
        if req.settings:
            prelude.append("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in req.settings.items()))
        if req.database and req.database != "default":
            prelude.append(f"USE {_ident(req.database)}")
        changes_state = bool(prelude) or stmt.kind in ("SET", "USE") or stmt.temporary

        session = self._session(req) if req.session_id else None
        conn = session.conn if session is not None else self._acquire()
        reusable = False
        t0 = time.perf_counter()
        try:
            for sql in prelude:
                conn._conn.query(sql, "TabSeparated", params={})
            if stmt.kind == "INSERT" and stmt.insert_format:
                result = self._insert(conn, req, stmt)
            else:
                result = self._query(conn, req, out_format)
            reusable = not changes_state
            result.summary["elapsed_ns"] = str(int((time.perf_counter() - t0) * 1e9))
            return result
        except ClickHouseError:
            raise
        except (RuntimeError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnicodeDecodeError):
                raise ClickHouseError(BAD_ARGUMENTS, f"The query is not valid UTF-8: {exc}") from None
            raise ClickHouseError.from_engine(exc) from None
        finally:
            if session is not None:
                session.last_used = time.monotonic()
                session.lock.release()
            else:
                self._release(conn, reusable)

    def _query(self, conn: Any, req: QueryRequest, out_format: str) -> QueryResult:
        sql = req.raw.decode("utf-8")
        res = conn._conn.query(sql, out_format, params=req.params)
        body = res.bytes()
        summary = {
            "read_rows": str(res.rows_read()),
            "read_bytes": str(res.bytes_read()),
            "written_rows": str(res.rows_written()),
            "written_bytes": str(res.bytes_written()),
            "total_rows_to_read": str(res.rows_read()),
            "result_bytes": str(len(body)),
        }
        return QueryResult(body=body, format=out_format, summary=summary)

    def _insert(self, conn: Any, req: QueryRequest, stmt: Statement) -> QueryResult:
        fmt = stmt.insert_format or ""
        if fmt.lower() not in self.input_formats:
            raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown input format {fmt}")
        head = req.raw[: stmt.head_end].decode("utf-8")
        data = memoryview(req.raw)[stmt.data_start :]
        inserter = conn.send_insert(head, self.input_formats[fmt.lower()])
        try:
            for i in range(0, len(data), INSERT_CHUNK):
                inserter.append(data[i : i + INSERT_CHUNK])
            res = inserter.finish()
        except BaseException:
            try:
                inserter.cancel()
            except Exception:  # noqa: BLE001 - the original error is what the client needs
                pass
            raise
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(res.rows_written),
            "written_bytes": str(res.bytes_written),
            "total_rows_to_read": "0",
            "result_bytes": "0",
        }
        return QueryResult(body=b"", format=fmt, summary=summary)

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for running queries, close every connection, then the engine, then release the lock."""
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(wait=True)
        with self._idle_lock:
            idle, self._idle = self._idle, []
        with self._sessions_lock:
            idle.extend(session.conn for session in self._sessions.values())
            self._sessions.clear()
        for conn in idle:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                log.debug("closing an idle connection failed", exc_info=True)
        try:
            self._anchor.close()
        finally:
            self._lock.release()
