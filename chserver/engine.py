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
  that query only, as in ClickHouse (the session's own values are put back after it);
* chDB releases the GIL while a query runs, so a long query in a worker thread does not stall the
  event loop that answers ``/ping``.

A long-lived *anchor* connection keeps the engine open for the life of the server; ``close`` releases
it last, after every worker has finished, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb

from chserver.access import Profile, check_ast, check_canonical, parse_ast
from chserver.auth import WRITER
from chserver.errors import (
    ACCESS_DENIED,
    BAD_ARGUMENTS,
    QUERY_WAS_CANCELLED,
    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING,
    READONLY,
    SYNTAX_ERROR,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    UNKNOWN_FORMAT,
    ClickHouseError,
)
from chserver.native import restore_zones
from chserver.sql import READ_ONLY_KINDS, Statement, analyze, tokens
from chserver.stream import STREAM_FORMATS, ResultStream, header_length

log = logging.getLogger(__name__)

LOCK_FILE = "chserver.lock"
HEAD_WINDOW = 1 << 20  # an INSERT's statement must start within the first MiB of the request
INSERT_CHUNK = 8 << 20
STREAM_AFTER = 1 << 20  # a result is answered whole up to this size; beyond it, the rest is streamed
STREAM_KINDS = frozenset({"SELECT", "WITH", "("})  # chDB streams only queries (SHOW … → BAD_ARGUMENTS)
_BARE_DATETIME = b"\x08DateTime"  # a Native column header whose type lost its zone (chserver.native)
TAG_PREFIX = "/*chserver:"  # leads the SQL given to chDB, so system.processes tells which request a query is


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
class ExternalTable:
    """External data of a request (a multipart file part): a temporary table for that query only."""

    name: str
    structure: str  # validated column declarations: names and types only
    format: str
    data: bytes


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
    profile: Profile = WRITER  # a restricted profile: checked on the parsed query, engine readonly, limits
    session_id: str | None = None
    session_timeout: int = 60
    session_check: bool = False  # the session must already exist
    query_id: str = ""  # the client's (or a generated) id: what KILL QUERY and a disconnect act on
    stream: bool = False  # the client accepts a streamed answer (not wait_end_of_query=1)
    tag: str = ""  # set while running: the engine-side marker of this request's chDB query
    external: list[ExternalTable] = field(default_factory=list)  # multipart file parts → temporary tables
    current_database: str | None = None  # the database the query runs in, when the server chose it
    running: RunningQuery | None = None  # registered by the HTTP layer on arrival


@dataclass
class RunningQuery:
    """A request between admission to the engine and its last result byte (what KILL QUERY sees)."""

    query_id: str
    user: str
    tag: str
    query: str
    started: float = field(default_factory=time.monotonic)
    killed: bool = False
    done: threading.Event = field(default_factory=threading.Event)


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
class RestrictedSession:
    """A restricted user's HTTP session: only vetted settings and a permitted database persist.

    Every query of a restricted user runs on a fresh connection locked with ``readonly``, so the
    session cannot hold a connection; what ``SET``/``USE`` changed is replayed before each query.
    """

    timeout: int
    settings: dict[str, str] = field(default_factory=dict)  # name -> SQL literal
    database: str | None = None
    last_used: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return now - self.last_used > self.timeout


# Statements without a result set: ClickHouse sends no X-ClickHouse-Format for them, and
# clickhouse-connect's command() relies on that to return a QuerySummary.
NO_RESULT_KINDS = frozenset(
    {"INSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "EXCHANGE", "OPTIMIZE", "ATTACH", "DETACH", "SET", "USE",
     "GRANT", "REVOKE", "SYSTEM", "UNDROP", "DELETE", "UPDATE", "BACKUP", "RESTORE"}
)  # fmt: skip


@dataclass
class QueryResult:
    body: bytes
    format: str
    summary: dict[str, str]
    has_result: bool = True  # False: no result set (DDL, INSERT, SET …), so no X-ClickHouse-Format
    stream: ResultStream | None = None  # the rest of a big result, after ``body``


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _escape_param(value: str) -> str:
    """A String query parameter is read in TSV-escaped form: escape backslashes and control characters."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("\0", "\\0")


def _summary(elapsed: float = 0.0) -> dict[str, str]:
    names = ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read", "result_bytes")
    summary = dict.fromkeys(names, "0")
    summary["elapsed_ns"] = str(int(elapsed * 1e9))
    return summary


def require_utf8(data: bytes, what: str = "The query") -> str:
    """ClickHouse's SQL text is UTF-8: anything else is refused with BAD_ARGUMENTS (400) before the engine
    sees it (chDB would take the bytes as they are). Binary data belongs after an INSERT's FORMAT clause."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise ClickHouseError(
            BAD_ARGUMENTS,
            f"{what} is not valid UTF-8 (byte 0x{bad} at offset {exc.start}); send binary data as an INSERT's data "
            "after FORMAT, or as a hex/base64 parameter",
        ) from None


def _ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """chDB on ``data_dir`` plus a thread pool and idle connections for concurrent requests."""

    def __init__(
        self, data_dir: Path, max_concurrent_queries: int = 16, databases: tuple[str, ...] = (), restricted_slots: int = 0
    ):
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
            self.table_functions = {r[0].lower() for r in self._rows("SELECT name FROM system.table_functions")}
            for db in databases:
                if db and db != "default":
                    self._anchor.query(f"CREATE DATABASE IF NOT EXISTS {_ident(db)}")
        except BaseException:
            self._lock.release()
            raise
        self.max_concurrent_queries = max_concurrent_queries
        self.executor = ThreadPoolExecutor(max_workers=max_concurrent_queries, thread_name_prefix="chdb")
        # Restricted users (BI tools, the query service) run in their own pool, so however many slow
        # reads are running or queued, the writer's loads and health checks get a thread at once.
        slots = restricted_slots or max(1, max_concurrent_queries // 2)
        self.restricted_executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="chdb-ro")
        self._running: dict[str, int] = {}
        self._running_lock = threading.Lock()
        self._restricted_sessions: dict[tuple[str, str], RestrictedSession] = {}
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()
        self._sessions: dict[tuple[str, str], Session] = {}
        self._sessions_lock = threading.Lock()
        self._queries: dict[str, RunningQuery] = {}
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
        """Read-only requests (GET, readonly=N, restricted users) may only run SELECT-class statements."""
        if (req.readonly or req.profile.restricted) and stmt.kind not in READ_ONLY_KINDS:
            raise ClickHouseError(READONLY, f"{req.user}: Cannot execute query in readonly mode.")

    def executor_for(self, profile: Profile) -> ThreadPoolExecutor:
        return self.restricted_executor if profile.restricted else self.executor

    @contextmanager
    def admission(self, user: str, profile: Profile) -> Iterator[None]:
        """Count a user's queries from arrival (queued ones too); over the profile's limit → code 202 at once."""
        limit = profile.max_concurrent_queries
        with self._running_lock:
            running = self._running.get(user, 0)
            if limit and running >= limit:
                raise ClickHouseError(
                    TOO_MANY_SIMULTANEOUS_QUERIES, f"Too many simultaneous queries for user {user}. Maximum: {limit}"
                )
            self._running[user] = running + 1
        try:
            yield
        finally:
            with self._running_lock:
                self._running[user] -= 1

    def execute(self, req: QueryRequest) -> QueryResult:
        """Run one request on its own connection (blocking; call from :meth:`executor_for`).

        The request is registered under its ``query_id`` until its last byte is out (a streamed result
        stays registered until the stream ends), so :meth:`kill` can find it; a second request with the
        id of a running one is refused (QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING), as in ClickHouse.
        """
        first = next(tokens(req.raw[:4096].decode("latin-1")), None)  # the statement kind; tokens() never raises
        if first is not None and first.text.upper() == "KILL":
            require_utf8(req.raw)
            return self._kill_statement(req)
        running = self._register(req)
        try:
            result = self._execute(req)
        except BaseException:
            self._unregister(running)
            raise
        if result.stream is None:
            self._unregister(running)
        else:
            close = result.stream._on_close

            def on_close(reusable: bool) -> None:
                try:
                    close(reusable)
                finally:
                    self._unregister(running)

            result.stream._on_close = on_close
        if first is not None and first.text.upper() in NO_RESULT_KINDS and not result.body:
            result.has_result = False
        return result

    def table_result(self, req: QueryRequest, columns: list[str], rows: list[list[str]]) -> QueryResult:
        """String rows computed by the server itself (SHOW GRANTS …) in the request's output format;
        no columns → a statement without a result set."""
        if not columns:
            return QueryResult(body=b"", format="TabSeparated", summary=_summary(), has_result=False)
        stmt = self.analyze(req.raw)
        wanted = stmt.output_format or req.default_format or "TabSeparated"
        out_format = self.output_formats.get(wanted.lower())
        if out_format is None:
            raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown output format {wanted}")
        structure = ", ".join(f"{_ident(c)} String" for c in columns)
        if rows:
            values = ", ".join("(" + ", ".join(_quote(v) for v in row) + ")" for row in rows)
            sql = f"SELECT * FROM values({_quote(structure)}, {values})"
        else:
            sql = "SELECT " + ", ".join(f"'' AS {_ident(c)}" for c in columns) + " LIMIT 0"
        conn = self._acquire()
        try:
            body = conn._conn.query(sql, out_format, params={}).bytes()
        except RuntimeError as exc:
            raise ClickHouseError.from_engine(exc) from None
        finally:
            self._release(conn, reusable=True)
        return QueryResult(body=body, format=out_format, summary=_summary())

    # --- running queries: KILL QUERY and client disconnects ----------------------------------------
    def register(self, query_id: str, user: str, preview: str = "") -> RunningQuery:
        """A request from its arrival on (the HTTP layer calls this before the request waits for a thread,
        so a KILL or a disconnect also reaches a request still queued: it is refused when it starts)."""
        running = RunningQuery(query_id=query_id or str(uuid.uuid4()), user=user, tag=uuid.uuid4().hex, query=preview)
        with self._running_lock:
            if running.query_id in self._queries:
                raise ClickHouseError(
                    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING, f"Query with id = {running.query_id} is already running."
                )
            self._queries[running.query_id] = running
        return running

    def _register(self, req: QueryRequest) -> RunningQuery:
        running = req.running
        if running is None:  # a direct caller (not the HTTP layer)
            running = req.running = self.register(req.query_id, req.user)
        req.query_id, req.tag = running.query_id, running.tag
        running.query = req.raw[:1000].decode("utf-8", errors="replace")
        return running

    def unregister(self, running: RunningQuery) -> None:
        self._unregister(running)

    def _unregister(self, running: RunningQuery) -> None:
        with self._running_lock:
            if self._queries.get(running.query_id) is running:
                del self._queries[running.query_id]
        running.done.set()

    def _tagged(self, req: QueryRequest, sql: str) -> str:
        """The SQL as chDB gets it: a leading comment naming the request (a comment never changes a query)."""
        if not req.tag:
            return sql
        with self._running_lock:
            running = self._queries.get(req.query_id)
        if running is not None and running.killed:
            raise ClickHouseError(QUERY_WAS_CANCELLED, "Query was cancelled.")
        return f"{TAG_PREFIX}{req.tag}*/ {sql}"

    def kill(self, query_id: str, user: str | None = None) -> RunningQuery | None:
        """Cancel a running request (``user``: only if it is that user's); blocking, call off the event loop.

        chDB cannot interrupt a query through its Python API (``streaming_cancel_query`` waits for the
        query to finish, an exception in the progress callback is ignored), but the engine's own
        ``KILL QUERY`` works on a query running on another connection of the same engine: the query
        stops at its next block with QUERY_WAS_CANCELLED (394). A request still waiting for a thread
        is refused when it starts. The kill is retried for a moment, since the request may be between
        registration and the engine's start of the query.
        """
        with self._running_lock:
            running = self._queries.get(query_id)
        if running is None or (user is not None and running.user != user):
            return None
        running.killed = True
        conn = chdb.connect(self._path)
        try:
            for _ in range(40):
                out = conn._conn.query(
                    f"KILL QUERY WHERE startsWith(query, {_quote(TAG_PREFIX + running.tag + '*/')}) ASYNC", "TSV", params={}
                ).bytes()
                if out.strip() or running.done.wait(0.05):
                    break
        finally:
            self._release(conn, reusable=False)
        return running

    def _kill_statement(self, req: QueryRequest) -> QueryResult:
        """``KILL QUERY WHERE … [SYNC|ASYNC|TEST] [FORMAT f]`` over this server's running requests.

        The writer's condition is any expression over ``query_id, user, query, elapsed`` (the columns of
        system.processes it needs most); a restricted user may only name query ids
        (``query_id = '…'`` / ``query_id IN (…)``) and only its own queries are found.
        """
        import re

        text = req.raw.decode("utf-8")
        toks = list(tokens(text))
        words = [t.text.upper() if t.kind == "word" else t.text for t in toks]
        if len(words) < 2 or words[1] != "QUERY":
            raise ClickHouseError(SYNTAX_ERROR, "Only KILL QUERY WHERE … is supported by this server")
        end = len(toks)
        out_format = req.default_format or "TabSeparated"
        if end >= 2 and words[end - 2] == "FORMAT":
            out_format = toks[end - 1].text
            end -= 2
        mode = "ASYNC"
        if end and words[end - 1] in ("SYNC", "ASYNC", "TEST"):
            mode = words[end - 1]
            end -= 1
        if "WHERE" not in words[:end]:
            raise ClickHouseError(SYNTAX_ERROR, "KILL QUERY needs a WHERE condition")
        where = words.index("WHERE")
        if where + 1 >= end:
            raise ClickHouseError(SYNTAX_ERROR, "KILL QUERY WHERE: empty condition")
        expr = text[toks[where + 1].start : toks[end - 1].end]
        fmt = self.output_formats.get(out_format.lower())
        if fmt is None:
            raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown output format {out_format}")
        with self._running_lock:
            running = [r for r in self._queries.values() if r.query_id != req.query_id]  # not the KILL itself
        conn = chdb.connect(self._path)
        try:
            if req.profile.restricted:
                literal = r"'((?:[^'\\]|\\.)*)'"
                one = re.fullmatch(rf"\s*query_id\s*=\s*{literal}\s*", expr)
                many = re.fullmatch(rf"\s*query_id\s+IN\s*\(\s*{literal}(?:\s*,\s*{literal})*\s*\)\s*", expr, re.I)
                if one is None and many is None:
                    raise ClickHouseError(
                        ACCESS_DENIED, f"{req.user}: Not enough privileges: only KILL QUERY WHERE query_id = '…' is allowed"
                    )
                wanted = set(re.findall(literal, expr))
                ids = [r.query_id for r in running if r.user == req.user and r.query_id in wanted]
            elif running:
                rows = ", ".join(
                    f"({_quote(r.query_id)}, {_quote(r.user)}, {_quote(r.query)}, {time.monotonic() - r.started:.6f})"
                    for r in running
                )
                sql = (f"SELECT query_id FROM values('query_id String, user String, query String, elapsed Float64', {rows}) "
                       f"WHERE ({expr})")
                ids = conn._conn.query(sql, "TSVRaw", params=req.params).bytes().decode().splitlines()
            else:
                ids = []
            killed: list[tuple[str, RunningQuery]] = []
            for query_id in ids:
                victim = self.kill(query_id) if mode != "TEST" else next((r for r in running if r.query_id == query_id), None)
                if victim is not None:
                    killed.append(("waiting", victim))
            if mode == "SYNC":
                deadline = time.monotonic() + 60
                killed = [("finished" if r.done.wait(max(0.0, deadline - time.monotonic())) else "waiting", r)
                          for _, r in killed]
            columns = "kill_status String, query_id String, user String, query String"
            if killed:
                rows = ", ".join(f"({_quote(s)}, {_quote(r.query_id)}, {_quote(r.user)}, {_quote(r.query)})" for s, r in killed)
                sql = f"SELECT * FROM values('{columns}', {rows})"
            else:
                sql = "SELECT '' AS kill_status, '' AS query_id, '' AS user, '' AS query LIMIT 0"
            body = conn._conn.query(sql, fmt, params={}).bytes()
        except RuntimeError as exc:
            raise ClickHouseError.from_engine(exc) from None
        finally:
            self._release(conn, reusable=False)
        return QueryResult(body=body, format=fmt, summary=_summary())

    def _execute(self, req: QueryRequest) -> QueryResult:
        """Run one request on its own connection."""
        if self._closed:
            raise ClickHouseError(210, "Server is shutting down", name="NETWORK_ERROR")
        if not req.raw.strip():
            raise ClickHouseError(SYNTAX_ERROR, "Empty query")
        stmt = self.analyze(req.raw)
        require_utf8(req.raw[: stmt.head_end] if stmt.insert_format else req.raw)
        self.check_allowed(req, stmt)
        out_format = stmt.output_format
        if out_format is None:
            wanted = req.default_format or "TabSeparated"
            out_format = self.output_formats.get(wanted.lower())
            if out_format is None:
                raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown output format {wanted}")
        if req.profile.restricted:
            return self._execute_restricted(req, stmt, out_format)

        prelude: list[str] = []
        if req.readonly:
            prelude.append(f"SET readonly = {int(req.readonly)}")
        if req.settings:
            prelude.append("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in req.settings.items()))
        if req.database and req.database != "default":
            prelude.append(f"USE {_ident(req.database)}")
        req.current_database = req.database
        changes_state = bool(prelude) or stmt.kind in ("SET", "USE") or stmt.temporary or bool(req.external)

        session = self._session(req) if req.session_id else None
        conn = session.conn if session is not None else self._acquire()
        reusable = False
        t0 = time.perf_counter()
        restore: list[str] = []
        released: list[bool] = []

        def cleanup(ok: bool) -> None:
            """Give the connection back (once): after the answer, or after the last streamed block."""
            if released:
                return
            released.append(True)
            if session is not None:
                try:
                    for sql in restore:
                        conn._conn.query(sql, "TabSeparated", params={})
                except RuntimeError:
                    log.warning("session %s: restoring settings after a query failed", req.session_id, exc_info=True)
                session.last_used = time.monotonic()
                session.lock.release()
            else:
                self._release(conn, ok and not changes_state)

        try:
            if session is not None:
                restore = self._session_restore(conn, req)
            for sql in prelude:
                conn._conn.query(sql, "TabSeparated", params={})
            restore.extend(self._create_external(conn, req))  # dropped after the query (a session's connection stays)
            if stmt.kind == "INSERT" and stmt.insert_format:
                result = self._insert(conn, req, stmt)
            else:
                result = self._query(conn, req, out_format, stmt, cleanup)
            reusable = True
            result.summary["elapsed_ns"] = str(int((time.perf_counter() - t0) * 1e9))
            return result
        except ClickHouseError:
            raise
        except (RuntimeError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnicodeDecodeError):
                raise ClickHouseError(BAD_ARGUMENTS, f"The query is not valid UTF-8: {exc}") from None
            raise ClickHouseError.from_engine(exc) from None
        finally:
            if not (reusable and result.stream is not None):
                cleanup(reusable)

    def _session_restore(self, conn: Any, req: QueryRequest) -> list[str]:
        """In a session, URL settings and ``database`` apply to that query only (as in ClickHouse): the
        statements that put the session's own values back afterwards (a SET in the query itself stays)."""
        out: list[str] = []
        if req.settings:
            names = ", ".join(_quote(k) for k in req.settings)
            rows = conn._conn.query(f"SELECT name, value FROM system.settings WHERE name IN ({names})", "TSVRaw", params={})
            pairs = [line.split("\t", 1) for line in rows.bytes().decode().splitlines()]
            if pairs:
                out.append("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in pairs))
        if req.database:
            current = conn._conn.query("SELECT currentDatabase()", "TSVRaw", params={}).bytes().decode().strip()
            out.append(f"USE {_ident(current)}")
        return out

    # --- restricted users --------------------------------------------------------------------------
    def _restricted_session(self, req: QueryRequest) -> RestrictedSession | None:
        from chserver.errors import SESSION_NOT_FOUND

        if not req.session_id:
            return None
        now = time.monotonic()
        key = (req.user, req.session_id)
        with self._sessions_lock:
            for k, old in list(self._restricted_sessions.items()):
                if old.expired(now):
                    del self._restricted_sessions[k]
            session = self._restricted_sessions.get(key)
            if session is None:
                if req.session_check:
                    raise ClickHouseError(SESSION_NOT_FOUND, f"Session {req.session_id} not found")
                session = self._restricted_sessions[key] = RestrictedSession(timeout=req.session_timeout)
            session.timeout = req.session_timeout
            session.last_used = now
        return session

    def _execute_restricted(self, req: QueryRequest, stmt: Statement, out_format: str) -> QueryResult:
        """A restricted user's query: vetted settings, then ``readonly`` locked, then checked on its parse, then run.

        The connection is fresh and closed afterwards, so nothing a restricted query does outlives it.
        """
        profile = req.profile
        session = self._restricted_session(req)
        conn = chdb.connect(self._path)
        t0 = time.perf_counter()
        streaming = False
        try:
            sql = req.raw.decode("utf-8")
            canonical = conn._conn.query("SELECT formatQuerySingleLine({chserver_query:String})", "RawBLOB",
                                         params={"chserver_query": _escape_param(sql)}).bytes().decode()
            databases = {r for r in conn._conn.query("SELECT name FROM system.databases", "TSVRaw", params={})
                         .bytes().decode().splitlines()}
            check_canonical(req.user, profile, canonical, databases)
            if stmt.kind in ("SET", "USE"):
                self._restricted_set_use(req, stmt.kind, canonical, session)
                return QueryResult(body=b"", format=out_format, summary=_summary(elapsed=time.perf_counter() - t0))
            database = req.database or (session.database if session else None) or profile.default_database
            settings = {k: _quote(v) for k, v in profile.profile_settings().items()}
            if session is not None:
                settings.update(session.settings)
            settings.update({k: _quote(v) for k, v in req.settings.items()})
            conn._conn.query("SET " + ", ".join(f"{k} = {v}" for k, v in settings.items()), "TabSeparated", params={})
            self._create_external(conn, req)  # before readonly is locked; the connection is closed afterwards
            if database in databases:
                conn._conn.query(f"USE {_ident(database)}", "TabSeparated", params={})
                req.current_database = database
            level = 1 if req.readonly == 1 else profile.readonly  # a client may ask for the stricter readonly=1
            conn._conn.query(f"SET readonly = {int(level)}", "TabSeparated", params={})
            tree = conn._conn.query("EXPLAIN AST " + sql, "TabSeparated", params=req.params).bytes().decode()
            check_ast(req.user, profile, parse_ast(tree), database, databases, self.table_functions)
            result = self._query(conn, req, out_format, stmt, lambda ok: self._release(conn, reusable=False))
            streaming = result.stream is not None
            result.summary["elapsed_ns"] = str(int((time.perf_counter() - t0) * 1e9))
            return result
        except (RuntimeError, UnicodeDecodeError) as exc:
            if isinstance(exc, UnicodeDecodeError):
                raise ClickHouseError(BAD_ARGUMENTS, f"The query is not valid UTF-8: {exc}") from None
            raise ClickHouseError.from_engine(exc) from None
        finally:
            if not streaming:
                self._release(conn, reusable=False)

    def _restricted_set_use(self, req: QueryRequest, kind: str, canonical: str, session: RestrictedSession | None) -> None:
        """``SET a = 1, b = 'x'`` / ``USE db`` of a restricted user: vetted, then kept in the session (if any)."""
        toks = [t for t in tokens(canonical)][1:]
        if kind == "USE":
            if len(toks) != 1 or toks[0].kind not in ("word", "qid"):
                raise ClickHouseError(SYNTAX_ERROR, "USE takes one database name")
            name = toks[0].text if toks[0].kind == "word" else toks[0].text[1:-1].replace("``", "`")
            req.profile.check_database(req.user, name)
            if session is not None:
                session.database = name
            return
        assignments: list[tuple[str, str]] = []
        i = 0
        while i < len(toks):
            if i + 2 >= len(toks) or toks[i].kind != "word" or toks[i + 1].text != "=":
                raise ClickHouseError(READONLY, f"{req.user}: only SET name = value[, …] is allowed in readonly mode")
            j = i + 2
            while j < len(toks) and not (toks[j].kind == "other" and toks[j].text == "," and toks[j].depth == 0):
                j += 1
            value = canonical[toks[i + 2].start : toks[j - 1].end]
            req.profile.check_setting(req.user, toks[i].text, value)
            assignments.append((toks[i].text, value))
            i = j + 1
        if session is not None:
            session.settings.update(assignments)

    def _query(
        self, conn: Any, req: QueryRequest, out_format: str, stmt: Statement | None = None,
        cleanup: Callable[[bool], None] | None = None,
    ) -> QueryResult:
        sql = self._tagged(req, req.raw.decode("utf-8"))
        if (cleanup is not None and req.stream and stmt is not None and stmt.kind in STREAM_KINDS
                and out_format.lower() in STREAM_FORMATS):
            return self._query_stream(conn, req, sql, out_format, cleanup)
        res = conn._conn.query(sql, out_format, params=req.params)
        body = res.bytes()
        if out_format == "Native" and _BARE_DATETIME in body and stmt is not None and stmt.kind in STREAM_KINDS:
            body = restore_zones(body, self._datetime_zones(conn, req))
        summary = {
            "read_rows": str(res.rows_read()),
            "read_bytes": str(res.bytes_read()),
            "written_rows": str(res.rows_written()),
            "written_bytes": str(res.bytes_written()),
            "total_rows_to_read": str(res.rows_read()),
            "result_bytes": str(len(body)),
        }
        return QueryResult(body=body, format=out_format, summary=summary)

    def _query_stream(
        self, conn: Any, req: QueryRequest, sql: str, out_format: str, cleanup: Callable[[bool], None]
    ) -> QueryResult:
        """Up to STREAM_AFTER bytes are read before answering (an error until then is a plain HTTP error,
        as ClickHouse's buffered first part); a longer result continues as a :class:`ResultStream`, so
        the server holds about one block of it at a time."""
        handle = conn._conn.send_query(sql, out_format, params=req.params)
        query_id = req.query_id
        stream = ResultStream(conn, handle, out_format, b"", cleanup, kill=lambda: self.kill(query_id))
        parts: list[bytes] = []
        size = 0
        while size < STREAM_AFTER:
            piece = stream.fetch()
            if piece is None:
                break
            if not parts:
                stream._header = piece[: header_length(out_format, piece)]
            parts.append(piece)
            size += len(piece)
        body = b"".join(parts)
        if out_format == "Native" and _BARE_DATETIME in body and not req.external:
            # The query's connection is busy streaming: another one tells the types, in the request's
            # database. It cannot see a session's temporary tables (DESCRIBE then fails: zones stay lost).
            other = chdb.connect(self._path)
            try:
                if req.current_database:
                    other._conn.query(f"USE {_ident(req.current_database)}", "TabSeparated", params={})
                zones = self._datetime_zones(other, req)
            except RuntimeError:
                zones = {}
            finally:
                self._release(other, reusable=False)
            if zones:
                body = restore_zones(body, zones)
                stream.transform = lambda piece: restore_zones(piece, zones)
        summary = _summary()  # what is known when the answer starts (ClickHouse's header is as early)
        summary.update(read_rows=str(stream.rows_read), read_bytes=str(stream.bytes_read),
                       total_rows_to_read=str(stream.rows_read), result_bytes=str(size))
        return QueryResult(body=body, format=out_format, summary=summary, stream=None if stream.done else stream)

    def _create_external(self, conn: Any, req: QueryRequest) -> list[str]:
        """External data (ClickHouse's multipart file parts): one temporary table per part, loaded from a
        file in its format; returns the statements that drop them again."""
        import tempfile

        drops: list[str] = []
        for table in req.external:
            fmt = self.input_formats.get(table.format.lower())
            if fmt is None:
                raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown input format {table.format} for external table {table.name}")
            name = _ident(table.name)
            conn._conn.query(f"CREATE TEMPORARY TABLE {name} ({table.structure}) ENGINE = Memory", "TabSeparated", params={})
            drops.append(f"DROP TEMPORARY TABLE IF EXISTS {name}")
            if not table.data:
                continue
            tmp_dir = self.data_dir / "tmp_inserts"
            tmp_dir.mkdir(exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".external") as f:
                f.write(table.data)
                f.flush()
                conn._conn.query(f"INSERT INTO {name} FROM INFILE {_quote(f.name)} FORMAT {fmt}", "TabSeparated",
                                 params={}).bytes()
        return drops

    def _datetime_zones(self, conn: Any, req: QueryRequest) -> dict[int, str]:
        """Positions and full types of the query's top-level ``DateTime('zone')`` columns (see chserver.native)."""
        text = req.raw.decode("utf-8")
        toks = list(tokens(text))
        cut = [(t.start, toks[i + 1].end) for i, t in enumerate(toks[:-1])
               if t.depth == 0 and t.kind == "word" and t.text.upper() == "FORMAT" and toks[i + 1].kind == "word"]
        for start, end in reversed(cut):
            text = text[:start] + text[end:]
        try:
            # one JSON array per column (a Tuple's type is printed on several lines)
            rows = conn._conn.query(f"DESCRIBE TABLE ({text})", "JSONCompactEachRow", params=req.params).bytes()
        except RuntimeError:
            log.debug("DESCRIBE for column time zones failed", exc_info=True)
            return {}
        types = [json.loads(line)[1] for line in rows.splitlines() if line.strip()]
        return {i: t for i, t in enumerate(types) if t.startswith("DateTime(")}

    def _insert(self, conn: Any, req: QueryRequest, stmt: Statement) -> QueryResult:
        """``INSERT … FORMAT f`` + data: the data goes to a temporary file loaded with ``FROM INFILE``.

        chDB's streaming inserter (``send_insert``) reports every row written but silently stores nothing when
        the block is refused — e.g. more than ``max_partitions_per_insert_block`` (100) partitions, which real
        ClickHouse answers with TOO_MANY_PARTS (252). ``FROM INFILE`` raises the engine's error, so the
        client gets it instead of losing the rows.
        """
        import tempfile

        fmt = stmt.insert_format or ""
        if fmt.lower() not in self.input_formats:
            raise ClickHouseError(UNKNOWN_FORMAT, f"Unknown input format {fmt}")
        head = req.raw[: stmt.head_end].decode("utf-8")
        data = memoryview(req.raw)[stmt.data_start :]
        # FROM INFILE goes before a SETTINGS clause (INSERT INTO t [(cols)] FROM INFILE … [SETTINGS …] FORMAT f)
        cut = next((t.start for t in tokens(head) if t.depth == 0 and t.kind == "word" and t.text.upper() == "SETTINGS"),
                   len(head))
        tmp_dir = self.data_dir / "tmp_inserts"
        tmp_dir.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".data") as f:
            for i in range(0, len(data), INSERT_CHUNK):
                f.write(data[i : i + INSERT_CHUNK])
            f.flush()
            path = f.name.replace("\\", "\\\\").replace("'", "\\'")
            sql = f"{head[:cut].rstrip()} FROM INFILE '{path}' {head[cut:]} FORMAT {self.input_formats[fmt.lower()]}"
            sql = self._tagged(req, sql)
            res = conn._conn.query(sql, "TabSeparated", params=req.params)
            res.bytes()
        written_rows, written_bytes = res.rows_written(), res.bytes_written()
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(written_rows),
            "written_bytes": str(written_bytes),
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
        self.restricted_executor.shutdown(wait=True)
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
