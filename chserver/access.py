"""What a restricted user may run, decided on ClickHouse's own parse of the query.

A word blocklist over the SQL text cannot be made safe (`` `file`(…) ``, ``"file"(…)``, comments,
``$tag$`` strings, case games …), so restricted users' queries are parsed by the engine itself:
``EXPLAIN AST <query>`` (with the request's bound parameters, so ``{t:Identifier}`` is substituted
exactly as it will be at execution) prints ClickHouse's syntax tree, one node per line; ``EXPLAIN
AST`` only parses, it never runs or writes anything (verified: ``EXPLAIN AST SELECT … INTO OUTFILE``
writes no file). The rules checked on that tree:

* every ``Function <name>`` node whose name is a table function (also the scalar ``file()``, which
  shares the name) must be in the profile's allowlist — ``numbers``, ``zeros``, ``generateSeries``,
  ``values``, ``view``, ``null`` … by default; ``file``/``s3``/``url`` only for a profile that names
  the allowed path/URL prefixes, and then only with a literal first argument under one of them;
  a few scalar functions that read files (``catboostEvaluate``) are refused to every restricted user;
* every ``TableIdentifier db.t`` (and a two-part ``Identifier`` whose first part names an existing
  database, e.g. ``x IN db.t``, ``EXISTS db.t``, ``SHOW TABLES FROM db``) must be in a permitted
  database; an unqualified name resolves to the request's current database, which is always a
  permitted one (``database``/``USE`` to another is refused);
* no ``INTO OUTFILE`` (a ``Literal`` child of the query node itself);
* functions that read a table or dictionary by name (``dictGet*``/``dictHas``/``dictIsIn``…,
  ``joinGet[OrNull]``, ``hasColumnInTable``) must name it with a literal or identifier in a permitted
  database — a computed name (``concat(…)``) cannot be checked and is refused;
* the system tables that show other users' queries or the access setup (``system.processes``,
  ``system.query_log`` and the other ``*_log`` tables, ``system.errors``, ``system.users``/``grants``…,
  ``SHOW PROCESSLIST``) are refused: a reader sees nobody's queries but its own answers.

The statement kind is also checked by the engine: restricted users run with ``readonly=2`` set on
their connection *after* the server applied their profile and vetted settings, so ClickHouse itself
refuses any write or DDL (code 164) and any change of ``readonly``. Settings a restricted user asks
for — URL parameters, ``SET`` (emulated, kept in the HTTP session) and ``SETTINGS`` clauses (read
from the canonical text) — go through :meth:`Profile.check_setting`: ``readonly``, ``allow_*``,
dialect switches and the profile's limits cannot be raised (ClickHouse's settings constraints).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from chserver.errors import ACCESS_DENIED, READONLY, ClickHouseError

# Table functions that only compute or read inline data: safe for every user.
SAFE_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries", "generate_series", "generaterandom", "primes",
     "values", "sqlstandardvalues", "null", "view", "format"}
)  # fmt: skip
# Scalar functions that read the server's files (their names are not table functions).
FILE_SCALAR_FUNCTIONS = frozenset({"file", "catboostevaluate"})
# Functions whose first argument names a table/dictionary ('db.name' or db.name).
NAMED_TABLE_FUNCTIONS = ("dictget", "dicthas", "dictisin", "dictgethierarchy", "dictgetchildren", "dictgetdescendants",
                         "joinget")  # prefixes, lower case: dictGetString, dictGetOrDefault, joinGetOrNull …
# System tables that show other users' queries, errors or the access configuration.
PRIVATE_SYSTEM_TABLES = frozenset(
    {"processes", "query_log", "query_thread_log", "query_views_log", "query_metric_log", "session_log", "text_log",
     "trace_log", "part_log", "processors_profile_log", "opentelemetry_span_log", "asynchronous_insert_log",
     "crash_log", "backup_log", "blob_storage_log", "s3queue_log", "filesystem_cache_log", "error_log", "errors",
     "zookeeper_log", "users", "roles", "grants", "role_grants", "settings_profiles", "settings_profile_elements",
     "quotas", "quota_usage", "quotas_usage", "quota_limits", "row_policies", "user_directories", "user_processes",
     "kafka_consumers", "dns_cache"}
)  # fmt: skip
# Table functions whose first argument is a path/URL a profile may allow by prefix.
PATH_TABLE_FUNCTIONS = {"file": "file", "s3": "url", "url": "url"}

# Settings no restricted user may set (readonly semantics, access widening, another SQL dialect).
LOCKED_SETTINGS = frozenset(
    {"readonly", "dialect", "sql_dialect", "max_concurrent_queries_for_user", "max_concurrent_queries_for_all_users",
     "max_memory_usage_for_user", "max_parser_depth", "max_query_size", "max_ast_elements", "max_ast_depth",
     "max_expanded_ast_elements", "queue_max_wait_ms", "max_execution_time_leaf",
     "timeout_before_checking_execution_speed", "default_database", "user_files_path",
     "function_sleep_max_microseconds_per_block"}
)  # fmt: skip

_LINE = re.compile(r"^( *)(\S+)(?: (.*?))?(?: \(alias [^)]*\))?(?: \(children \d+\))?$")


@dataclass(frozen=True)
class Profile:
    """A user's limits and permissions (ClickHouse's settings profile + grants, in one place)."""

    restricted: bool = False  # False: the writer, no checks at all
    databases: frozenset[str] = frozenset()  # permitted databases (restricted users); fnmatch patterns allowed
    default_database: str = "default"
    table_functions: frozenset[str] = SAFE_TABLE_FUNCTIONS  # lower-cased allowlist
    file_roots: tuple[str, ...] = ()  # file() allowed under these absolute directories
    url_prefixes: tuple[str, ...] = ()  # s3()/url() allowed under these URL prefixes
    readonly: int = 2  # the engine's readonly level on the user's connection (2: reads + vetted settings)
    limits: dict[str, int] = field(default_factory=dict)  # max_execution_time, max_memory_usage, … (0 = unlimited)
    max_concurrent_queries: int = 0  # 0 = no per-user limit
    tables: frozenset[tuple[str, str]] = frozenset()  # single permitted tables (GRANT SELECT ON db.t)

    def permits(self, database: str) -> bool:
        """A permitted database: listed, or matching a listed pattern (``dbt_*``)."""
        if database in self.databases:
            return True
        return any(fnmatch.fnmatchcase(database, p) for p in self.databases if any(c in p for c in "*?["))

    def permits_table(self, database: str, table: str) -> bool:
        return self.permits(database) or (database, table) in self.tables

    def permits_any(self, database: str) -> bool:
        """The whole database, or at least one table of it (naming it, e.g. as current database, is allowed)."""
        return self.permits(database) or any(db == database for db, _ in self.tables)

    def check_database(self, user: str, database: str) -> None:
        if self.restricted and not self.permits_any(database):
            raise ClickHouseError(ACCESS_DENIED, f"{user}: Not enough privileges. To execute this query, it's necessary "
                                  f"to have the grant SHOW DATABASES ON {database}.*")

    def check_setting(self, user: str, name: str, value: str) -> None:
        """Refuse settings that widen access or raise a limit above the profile (ClickHouse's constraints)."""
        if not self.restricted:
            return
        lower = name.lower()
        if lower in LOCKED_SETTINGS or lower.startswith("allow_"):
            raise ClickHouseError(READONLY, f"{user}: Cannot modify '{name}' setting in readonly mode")
        if lower in self.limits and self.limits[lower]:
            try:
                wanted = float(value.strip().strip("'"))
            except ValueError:
                limit = self.limits[lower]
                raise ClickHouseError(READONLY, f"{user}: Setting {name} must be a number not above {limit}") from None
            if wanted <= 0 or wanted > self.limits[lower]:
                raise ClickHouseError(
                    READONLY,
                    f"{user}: Setting {name} shouldn't be greater than {self.limits[lower]} (nor 0 = unlimited) for this user",
                )

    def profile_settings(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.limits.items() if v}


@dataclass(frozen=True)
class Node:
    depth: int
    kind: str
    text: str  # the rest of the line (a name, literal or identifier)


def parse_ast(text: str) -> list[Node]:
    """The lines of ``EXPLAIN AST`` (TabSeparated, so a newline inside a name is escaped) as nodes."""
    nodes: list[Node] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise ClickHouseError(ACCESS_DENIED, "Cannot check this query's privileges (unexpected syntax tree)")
        nodes.append(Node(len(m.group(1)), m.group(2), m.group(3) or ""))
    return nodes


def _unescape_literal(text: str) -> str | None:
    """A string literal as EXPLAIN AST prints it (``\\'abc\\'`` in TSV) → its value; None if not a plain string."""
    s = text.replace("\\\\", "\\")
    if not (s.startswith("\\'") and s.endswith("\\'")) or len(s) < 4:
        return None
    inner = s[2:-2]
    if "\\" in inner or "'" in inner:
        return None  # escapes inside a path: refuse rather than interpret
    return inner


def _path_allowed(fn: str, arg: str | None, profile: Profile) -> bool:
    if arg is None:
        return False
    if PATH_TABLE_FUNCTIONS[fn] == "file":
        if not arg.startswith("/") or ".." in arg or "//" in arg:
            return False
        return any(arg == root or arg.startswith(root.rstrip("/") + "/") for root in profile.file_roots)
    if ".." in arg:
        return False
    return any(arg.startswith(prefix.rstrip("/") + "/") for prefix in profile.url_prefixes)


def check_ast(
    user: str, profile: Profile, nodes: list[Node], current_db: str, databases: set[str], table_functions: set[str]
) -> None:
    """Raise ACCESS_DENIED unless every table function, table and output of the tree is permitted."""
    if not profile.restricted:
        return
    for i, node in enumerate(nodes):
        parent = next((nodes[j] for j in range(i - 1, -1, -1) if nodes[j].depth < node.depth), None)
        if node.kind == "ShowProcesslistQuery":
            _deny(user, "SHOW PROCESSLIST shows other users' queries")
        if node.kind == "Function":
            name = node.text.split(" ", 1)[0].lower()
            if name.startswith(NAMED_TABLE_FUNCTIONS) or name == "hascolumnintable":
                _check_named_table(user, profile, nodes, i, name, current_db)
            if name in FILE_SCALAR_FUNCTIONS - PATH_TABLE_FUNCTIONS.keys():
                _deny(user, f"function {name}() is not allowed for this user")
            if name in PATH_TABLE_FUNCTIONS and (profile.file_roots or profile.url_prefixes):
                first = _first_argument(nodes, i)
                if not _path_allowed(name, first, profile):
                    _deny(user, f"{name}() is only allowed on the lake ({', '.join(profile.file_roots + profile.url_prefixes)})")
                continue
            if (name in table_functions or name in FILE_SCALAR_FUNCTIONS) and name not in profile.table_functions:
                _deny(user, f"table function {name}() is not allowed for this user")
        elif node.kind == "TableIdentifier":
            parts = node.text.split(".")
            if len(parts) > 2:
                _deny(user, f"table name {node.text!r} is ambiguous")
            db = parts[0] if len(parts) == 2 else current_db
            if not profile.permits_table(db, parts[-1]):
                _deny(user, f"{'table ' + db + '.' + parts[-1] if profile.permits_any(db) else 'database ' + db} "
                      "is not permitted for this user")
            _check_system_table(user, db, parts[-1])
        elif node.kind == "Identifier":
            # x IN db.t, EXISTS db.t, SHOW TABLES FROM db, USE db …: a name that is an existing database
            # other than a permitted one is refused (a column or alias spelled like one is refused too)
            parts = node.text.split(".")
            first = parts[0]
            if first in databases and not (
                profile.permits_table(first, parts[1]) if len(parts) == 2 else profile.permits_any(first)
            ):
                _deny(user, f"database {first} is not permitted for this user")
            if len(parts) == 2:
                _check_system_table(user, parts[0], parts[1])
        elif node.kind == "Literal" and parent is not None and (
            parent.kind.endswith("Query") or parent.kind.startswith("Show")
        ) and parent.kind != "SelectQuery":
            _deny(user, "INTO OUTFILE is not allowed")


def _check_system_table(user: str, db: str, table: str) -> None:
    if db == "system" and table.strip("`") in PRIVATE_SYSTEM_TABLES:
        _deny(user, f"system.{table} shows other users' queries or the access configuration")


def _arguments(nodes: list[Node], i: int) -> list[Node]:
    """The direct argument nodes of the Function at ``nodes[i]``."""
    fn = nodes[i]
    if i + 1 >= len(nodes) or nodes[i + 1].kind != "ExpressionList" or nodes[i + 1].depth != fn.depth + 1:
        return []
    out: list[Node] = []
    for node in nodes[i + 2 :]:
        if node.depth <= fn.depth + 1:
            break
        if node.depth == fn.depth + 2:
            out.append(node)
    return out


def _check_named_table(user: str, profile: Profile, nodes: list[Node], i: int, name: str, current_db: str) -> None:
    """dictGet('db.d', …) / joinGet(db.t, …) / hasColumnInTable('db', 't', 'c'): the named database is permitted."""
    args = _arguments(nodes, i)
    if name == "hascolumnintable":
        if len(args) != 3 or args[0].kind != "Literal" or (db := _unescape_literal(args[0].text)) is None:
            _deny(user, "hasColumnInTable() takes a literal local database name for this user")
        if not profile.permits_any(db):
            _deny(user, f"database {db} is not permitted for this user")
        return
    if not args:
        return  # the engine reports the missing argument
    first = args[0]
    if first.kind == "Literal":
        target = _unescape_literal(first.text)
    elif first.kind == "Identifier":
        target = first.text.replace("`", "")
    else:
        target = None
    if target is None:
        _deny(user, f"{name}() must name its table or dictionary with a literal for this user")
    parts = target.split(".")
    if len(parts) > 2:
        _deny(user, f"table name {target!r} is ambiguous")
    db = parts[0] if len(parts) == 2 else current_db
    if not profile.permits_table(db, parts[-1]):
        _deny(user, f"database {db} is not permitted for this user")
    _check_system_table(user, db, parts[-1])


def _first_argument(nodes: list[Node], i: int) -> str | None:
    """The first argument of the Function at ``nodes[i]`` if it is a string literal."""
    fn = nodes[i]
    if i + 2 < len(nodes) and nodes[i + 1].kind == "ExpressionList" and nodes[i + 1].depth == fn.depth + 1:
        arg = nodes[i + 2]
        if arg.depth == fn.depth + 2 and arg.kind == "Literal":
            return _unescape_literal(arg.text)
    return None


def _deny(user: str, what: str) -> None:
    raise ClickHouseError(ACCESS_DENIED, f"{user}: Not enough privileges: {what}")


def check_canonical(user: str, profile: Profile, canonical: str, databases: set[str]) -> None:
    """Checks on ClickHouse's own formatting of the query (``formatQuerySingleLine``): no comments, no
    ``$tag$`` strings, every string single-quoted — so tokens are exact. ``EXPLAIN AST`` omits parts of
    SHOW statements (``SHOW COLUMNS FROM t FROM db``) and prints INTO OUTFILE as a bare literal, so both
    are decided here: no ``INTO OUTFILE`` anywhere, and no token naming a database that is not permitted."""
    if not profile.restricted:
        return
    from chserver.sql import tokens

    toks = list(tokens(canonical))
    for i, tok in enumerate(toks):
        if tok.kind == "word" and tok.text == "SETTINGS":
            for name, value in settings_clause(canonical, toks, i + 1):
                profile.check_setting(user, name, value)
    prev = ""
    for tok in toks:
        word = tok.text if tok.kind == "word" else tok.text[1:-1].replace("``", "`") if tok.kind == "qid" else ""
        if prev == "INTO" and tok.text.upper() == "OUTFILE":
            _deny(user, "INTO OUTFILE is not allowed")
        if word and word in databases and not profile.permits_any(word):
            _deny(user, f"database {word} is not permitted for this user")
        prev = tok.text.upper() if tok.kind == "word" else ""


def settings_clause(text: str, toks: list, start: int) -> list[tuple[str, str]]:
    """``name = value, …`` from ``toks[start]`` on (canonical text): the assignments, values as SQL text."""
    out: list[tuple[str, str]] = []
    i = start
    while i + 2 < len(toks) + 1 and i + 1 < len(toks) and toks[i].kind in ("word", "qid") and toks[i + 1].text == "=":
        name = toks[i].text if toks[i].kind == "word" else toks[i].text[1:-1]
        depth = toks[i].depth
        j = i + 2
        while j < len(toks) and not (toks[j].depth == depth and (toks[j].text == "," or toks[j].kind in ("close", "semi")
                                                                 or (toks[j].kind == "word" and toks[j].text.isupper()
                                                                     and j > i + 2))):
            j += 1
        if j == i + 2:
            raise ClickHouseError(READONLY, f"Setting {name} has no value")
        out.append((name, text[toks[i + 2].start : toks[j - 1].end]))
        if j < len(toks) and toks[j].text == ",":
            i = j + 1
        else:
            break
    return out
