"""``/api/sql``'s query rewriting: read-only checks, project scoping and the custom functions — pure, no I/O.

Everything is decided on sqlglot's ClickHouse-dialect syntax tree, never on the SQL text:

* one statement: ``SELECT``, ``WITH … SELECT``, set operations of those, or ``EXPLAIN [AST|SYNTAX|PLAN|PIPELINE|
  ESTIMATE|QUERY TREE] <select>``; anything else is refused (400);
* ``SETTINGS`` and ``FORMAT`` clauses are refused (400; the service sets the limits and the output format),
  ``INTO OUTFILE`` does not parse (400); parameters binding identifiers (``{x:Identifier}``) and names of the
  reserved ``_ep_`` prefix are refused (400);
* a table reference must be a plain name: ``events``, a mart (:data:`MART_TABLES`), or a CTE visible where it is
  used (a CTE sees the CTEs defined before it); table functions, ``system.*``, other databases and every other
  table are refused (403); a CTE may not take the name of one of those tables (400: it would shadow it);
  ``x IN table`` must be written ``x IN (SELECT …)``; functions reading files, dictionaries or other tables
  (``file``, ``url``, ``dictGet*``, ``joinGet``, …) are refused (403);
* every reference to ``events`` becomes the project's events as the typed endpoints read them — one row per
  ``insert_id`` (the first received copy), then bots excluded (after the deduplication, as
  ``compile.common.events_source`` and the marts) — and every mart reference the project's rows of that
  mart: ``(SELECT * FROM <db>.<table> AS __ep_src WHERE __ep_src.project = {_ep_project:String} …) AS <alias>``,
  in subqueries, CTEs, joins and unions alike. The filter's columns are qualified, so no alias of the query can
  shadow them.
  WHERE conjuncts reading only ``event_time``, right over ``events`` (its only source), are also applied inside
  that source, before the deduplication: the typed endpoints bound their source the same way, and the scan
  is then bounded (partition pruning) instead of deduplicating the project's whole history.

Custom aggregate functions (rewritten to plain ClickHouse SQL over the group's ``event_time``/``insert_id``;
events ordered by (event_time, insert_id), as the typed endpoints order them):

* ``FUNNEL(<window>, <cond1>, …, <condN>[, 'ordered'|'unordered'|'sequential'])`` (any case) → UInt8, the level
  0…N of the actor's most complete path: over every entry event (``cond1`` true on it) the number of steps its
  path reaches within ``<window>`` after it, by the rules of ``query_service/compile/funnel.py`` (the very same
  shared functions, :func:`eventpipe_core.funnel_sql.funnel_paths_expr`); ``<window>`` is ``INTERVAL n
  DAY|HOUR|MINUTE|SECOND`` or a number of seconds (a step exactly at the limit counts). The typed endpoint's
  range rule (entries inside [start, end], later steps up to the window after ``end``) is written as a condition
  on the entry plus a WHERE reading up to ``end`` + window.
* ``RETENTION(<start cond>, <return cond>, <N>[, 'n-day'|'rolling'])`` (upper case; ``retention`` in any other
  spelling is ClickHouse's own aggregate) → UInt8: 1 if the group has a start event and, with the cohort day =
  the local day (project time zone) of its first start event, a return event on day cohort+N (``n-day``,
  default) or on any day ≥ cohort+N (``rolling``); ``N = 0`` → 1 for every actor with a start event.
  As ``query_service/compile/retention.py`` for daily intervals.
* ``projectTimezone()`` → the project's time zone (String), e.g. ``toDate(event_time, projectTimezone())``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

with warnings.catch_warnings():  # another package's optional sqlglotrs warns on import; this module does not use it
    warnings.filterwarnings("ignore", message=".*sqlglot.rs.*", category=UserWarning)
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError
    from sqlglot.tokens import Token, TokenType

from eventpipe_core.funnel_sql import funnel_paths_expr

DIALECT = "clickhouse"
EVENTS_TABLE = "events"
# The dbt marts (dbt_project/models/marts/*.sql; a test keeps the two in sync). Each has a ``project`` column.
MART_TABLES = ("dim_users", "fct_active_users", "fct_events_per_minute", "fct_funnels", "fct_lifecycle",
               "fct_retention_cohorts", "fct_sessions", "fct_stickiness")
TABLES = (EVENTS_TABLE, *MART_TABLES)
RESERVED_PREFIX = "_ep_"
PROJECT_PARAM = f"{RESERVED_PREFIX}project"
TZ_PARAM = f"{RESERVED_PREFIX}tz"
SRC_ALIAS = "__ep_src"
MAX_QUERY_CHARS = 100_000
FUNNEL_MODES = ("ordered", "unordered", "sequential")
RETENTION_MODES = ("n-day", "rolling")
EXPLAIN_KINDS = ("AST", "SYNTAX", "PLAN", "PIPELINE", "ESTIMATE", "QUERY TREE")
MAX_FUNNEL_STEPS = 32  # the step bitmask is a UInt32
_WINDOW_UNITS = {"DAY": 86_400, "HOUR": 3600, "MINUTE": 60, "SECOND": 1}
# Functions that read files, URLs, dictionaries, other tables or servers (scalar names; table functions are
# refused by position). Lower case; ``dictget`` and friends are matched by prefix.
DENIED_FUNCTIONS = frozenset(
    {"file", "url", "s3", "s3cluster", "gcs", "hdfs", "hdfscluster", "azureblobstorage", "remote", "remotesecure",
     "cluster", "clusterallreplicas", "mysql", "postgresql", "mongodb", "redis", "sqlite", "jdbc", "odbc", "input",
     "executable", "iceberg", "deltalake", "hudi", "merge", "joinget", "joingetornull", "hascolumnintable",
     "catboostevaluate", "filecluster", "urlcluster", "loop", "view", "viewifpermitted", "getsubcolumn",
     "getmacro", "displayname", "fqdn", "hostname", "getserverport", "uptime", "buildid",
     # IN's function forms take a table name as their second argument
     *(f"{g}{n}in{i}" for g in ("", "global") for n in ("", "null", "notnull", "not") for i in ("", "ignoreset"))}
)  # fmt: skip
_DENIED_PREFIXES = ("dict", "s3", "hdfs", "azure", "iceberg", "deltalake", "hudi", "remote")


class SqlRefused(Exception):
    """The query is not accepted: ``status`` 400 (not a read-only SELECT, bad syntax) or 403 (reads what the
    caller may not read)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Rewritten:
    normalized: str  # the caller's query, canonically printed (what a cache keys on; rewrite(normalized) == self)
    sql: str  # what runs: scoped, custom functions expanded; needs PROJECT_PARAM and TZ_PARAM bound
    tables: frozenset[str]  # of TABLES, the tables the query reads
    explain: bool
    params: frozenset[str]  # the caller's parameter names the query uses
    placeholders: bool  # ``sql`` has {name:Type} placeholders (else nothing may be bound: no driver formatting)


def _refuse(message: str, status: int = 400) -> SqlRefused:
    return SqlRefused(status, message)


def _parse_one(sql: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except (ParseError, TokenError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _refuse(f"cannot parse the query: {first[:300]}") from None
    if len(statements) != 1:
        raise _refuse("send exactly one statement")
    return statements[0]


def _tokens(text: str) -> list[Token]:
    try:
        return sqlglot.Dialect.get_or_raise(DIALECT).tokenize(text)
    except TokenError as exc:
        raise _refuse(f"cannot parse the query: {str(exc).splitlines()[0][:300] if str(exc) else 'bad token'}") from None


def _split_explain(text: str) -> tuple[str, str]:
    """``EXPLAIN``'s remainder → (kind, the SELECT's text), on sqlglot's tokens; settings of EXPLAIN are refused."""
    tokens = _tokens(text)
    kind, i = "", 0
    words = [t.text.upper() for t in tokens]
    if words[:2] == ["QUERY", "TREE"]:
        kind, i = "QUERY TREE", 2
    elif words and words[0] in EXPLAIN_KINDS:
        kind, i = words[0], 1
    if i >= len(tokens) or tokens[i].token_type not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN):
        raise _refuse(f"EXPLAIN takes an optional kind ({', '.join(EXPLAIN_KINDS)}) and a SELECT, nothing else")
    return kind, text[tokens[i].start:]


def _check_query_root(root: exp.Expression) -> exp.Query:
    if not isinstance(root, exp.Query):
        raise _refuse("only SELECT, WITH … SELECT and EXPLAIN statements are accepted (the SQL API is read-only)")
    return root


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        return node.name
    return node.sql_name()


def _visible_ctes(node: exp.Expression) -> set[str]:
    """CTE names visible at ``node``: those of every enclosing WITH, but inside a CTE's body only the CTEs
    defined before it (ClickHouse resolves a CTE's own name inside it to the table of that name)."""
    names: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            if isinstance(child, exp.CTE) and child in ctes:
                ctes = ctes[: ctes.index(child)]
            names.update(c.alias_or_name for c in ctes if not c.args.get("scalar"))
        elif isinstance(parent, exp.Query) and parent.args.get("with_") is not None and child is not parent.args.get("with_"):
            names.update(c.alias_or_name for c in parent.args["with_"].expressions if not c.args.get("scalar"))
        child, parent = parent, parent.parent
    return names


def _check_tree(root: exp.Expression, database: str) -> tuple[list[exp.Table], set[str]]:
    """Every check of the module docstring; returns the table references to scope and the parameter names."""
    scoped: list[exp.Table] = []
    params: set[str] = set()
    for node in root.walk():
        if isinstance(node, exp.Query):
            if node.args.get("settings"):
                raise _refuse("SETTINGS clauses are not accepted: the SQL API sets the query limits")
            if node.args.get("format"):
                raise _refuse("FORMAT clauses are not accepted: the SQL API answers in ClickHouse's JSON shape")
        if isinstance(node, exp.Into):
            raise _refuse("INTO is not accepted (the SQL API is read-only)")
        if isinstance(node, exp.Placeholder):
            name = node.name
            kind = node.args.get("kind")
            if not name or name.startswith(RESERVED_PREFIX):
                raise _refuse(f"parameter names starting with {RESERVED_PREFIX} are reserved")
            kind_text = kind.sql(DIALECT) if isinstance(kind, exp.Expression) else str(kind or "")
            if "identifier" in kind_text.lower():
                raise _refuse(f"parameter {name}: Identifier parameters are not accepted (bind values, not names)")
            params.add(name)
        if isinstance(node, exp.Identifier) and node.name.lower().startswith((RESERVED_PREFIX, "__ep")):
            raise _refuse(f"names starting with {RESERVED_PREFIX} or __ep are reserved: {node.name[:60]}")
        if isinstance(node, exp.CTE) and not node.args.get("scalar") and node.alias_or_name in TABLES:
            raise _refuse(f"a CTE may not be named {node.alias_or_name!r}: it would shadow that table")
        if isinstance(node, exp.In) and (node.args.get("field") is not None or _names_a_table(node.expressions)):
            raise _refuse("write `x IN (SELECT …)` or `x IN (values…)`, not `x IN <table>`")
        if isinstance(node, exp.Func):
            fname = _function_name(node).lower()
            if fname in DENIED_FUNCTIONS or fname.startswith(_DENIED_PREFIXES):
                raise _refuse(f"function {fname}() is not available in the SQL API", 403)
        if isinstance(node, exp.Table):
            scoped_table = _check_table(node, database)
            if scoped_table is not None:
                scoped.append(scoped_table)
    return scoped, params


def _names_a_table(items: list[exp.Expression]) -> bool:
    """``x IN (t)``: ClickHouse reads a lone identifier on IN's right side as a table."""
    if len(items) != 1:
        return False
    item = items[0]
    while isinstance(item, exp.Paren | exp.Tuple) and len(item.expressions or [item.this]) == 1:
        item = item.this if isinstance(item, exp.Paren) else item.expressions[0]
    return isinstance(item, exp.Column | exp.Identifier | exp.Dot)


def _check_table(node: exp.Table, database: str) -> exp.Table | None:
    target = node.this
    if isinstance(target, exp.Placeholder):
        raise _refuse("a table name cannot be a parameter (bind values, not names)")
    if not isinstance(target, exp.Identifier):
        raise _refuse("table functions are not available in the SQL API: read events or the marts", 403)
    if node.args.get("catalog") is not None:
        raise _refuse(f"table {node.sql(DIALECT)[:80]} is not available: read events or the marts", 403)
    db = node.args.get("db")
    name = target.name
    if db is not None:
        if db.name != database:
            raise _refuse(f"database {db.name[:60]!r} is not available: read events or the marts", 403)
    elif name in _visible_ctes(node):
        return None  # a CTE of the query
    if name not in TABLES:
        raise _refuse(f"table {name[:60]!r} is not available; the SQL API reads {', '.join(TABLES)}", 403)
    if node.args.get("sample") is not None:
        raise _refuse("SAMPLE is not supported in the SQL API")
    return node


def _scoped_source(table: str, database: str, bounds: tuple[exp.Expression, ...] = ()) -> str:
    """The project's rows of ``table``; ``events`` as the typed endpoints' source (``compile.common.events_source``):
    one row per insert_id (the first received), then bots dropped. ``bounds``: conditions on the source's
    ``event_time`` applied before the deduplication.

    Every row is deduplicated here, not only the actors listed in ``event_copies`` as the typed endpoints do
    (the same rows either way): a UNION of the two parts trips ``max_result_rows`` (SQL_MAX_RESULT_ROWS)
    before an outer LIMIT stops it, so a query within its limit would be refused."""
    src = f"{database}.{table} AS {SRC_ALIAS}"
    where = f"{SRC_ALIAS}.project = {{{PROJECT_PARAM}:String}}"
    if table != EVENTS_TABLE:
        return f"SELECT * FROM {src} WHERE {where}"
    where = " AND ".join([where, *(f"({b.sql(DIALECT)})" for b in bounds)])
    return (f"SELECT * FROM (SELECT * FROM {src} WHERE {where} ORDER BY {SRC_ALIAS}.received_at, {SRC_ALIAS}.event_time"
            f" LIMIT 1 BY {SRC_ALIAS}.insert_id) AS {SRC_ALIAS}_dedup WHERE {SRC_ALIAS}_dedup.is_bot = 0")


def _time_bounds(table: exp.Table, alias: str) -> list[exp.Expression]:
    """The conjuncts of the WHERE right over ``events`` (its only source) that read nothing but ``event_time``,
    rewritten onto the source's column: applied before the deduplication too — what the typed endpoints do
    (their source is bounded in time, then deduplicated) — so the scan is bounded and can skip partitions."""
    from_ = table.parent
    select = from_.parent if isinstance(from_, exp.From) else None
    if not isinstance(select, exp.Select) or select.args.get("joins") or select.args.get("where") is None:
        return []
    cond = select.args["where"].this
    out = []
    for conj in (cond.flatten() if isinstance(cond, exp.And) else [cond]):
        cols = list(conj.find_all(exp.Column))
        if not cols or any(c.name != "event_time" or c.table not in ("", alias) or c.args.get("db") for c in cols):
            continue
        if conj.find(exp.Subquery, exp.Select, exp.AggFunc, exp.Window, exp.Lambda) is not None:
            continue
        copy = conj.copy()
        for c in list(copy.find_all(exp.Column)):
            c.replace(exp.column("event_time", table=SRC_ALIAS))
        out.append(copy)
    return out


def _literal_int(node: exp.Expression, what: str) -> int:
    if isinstance(node, exp.Neg):
        raise _refuse(f"{what} must not be negative")
    if isinstance(node, exp.Literal) and (not node.is_string or node.this.isdigit()):
        try:
            return int(node.this)
        except ValueError:
            pass
    raise _refuse(f"{what} must be an integer literal, got {node.sql(DIALECT)[:60]}")


def _window_seconds(node: exp.Expression) -> int:
    if isinstance(node, exp.Interval):
        unit = (node.text("unit") or "").upper().rstrip("S")
        if unit not in _WINDOW_UNITS or node.this is None:
            raise _refuse("FUNNEL's window: INTERVAL n DAY|HOUR|MINUTE|SECOND or a number of seconds")
        seconds = _literal_int(node.this, "FUNNEL's window") * _WINDOW_UNITS[unit]
    else:
        seconds = _literal_int(node, "FUNNEL's window (seconds)")
    if seconds <= 0:
        raise _refuse("FUNNEL's window must be positive")
    return seconds


def _mode_arg(args: list[exp.Expression], modes: tuple[str, ...], fn: str, default: str) -> tuple[list[exp.Expression], str]:
    last = args[-1] if args else None
    if isinstance(last, exp.Literal) and last.is_string:
        if last.this not in modes:
            raise _refuse(f"{fn}'s mode must be one of {', '.join(modes)}, got {last.this[:40]!r}")
        return args[:-1], last.this
    return args, default


def _sql(node: exp.Expression) -> str:
    return f"({node.sql(DIALECT)})"


def funnel_sql(window_s: int, conds: list[str], mode: str) -> str:
    """FUNNEL's aggregate: the group's events as (ms, insert_id, step bitmask) sorted, every entry's path from the
    shared funnel functions (the typed endpoint's and the marts'), the longest path's length."""
    n = len(conds)
    mask = " + ".join(f"if({c}, {1 << k}, 0)" for k, c in enumerate(conds))
    evs = f"arraySort(x -> (x.1, x.2), groupArray((toUnixTimestamp64Milli(event_time), insert_id, toUInt64({mask}))))"
    paths = funnel_paths_expr(mode, "evs.1", "evs.3", n, f"toInt64({window_s * 1000})")
    return f"toUInt8(arrayMap(evs -> arrayMax(arrayPushBack(arrayMap(p -> length(p), {paths}), 0)), [{evs}])[1])"


def retention_sql(start: str, ret: str, n: int, mode: str) -> str:
    """RETENTION's aggregate: the first start event's local day vs the local days of return events."""
    day = f"toDate(event_time, {{{TZ_PARAM}:String}})"
    returns = f"groupUniqArrayIf({day}, {ret})"
    cohort = f"minIf({day}, {start})"
    cmp = "=" if mode == "n-day" else ">="
    returned = (f"arrayExists((d, c) -> dateDiff('day', c, d) {cmp} {n}, {returns},"
                f" arrayWithConstant(length({returns}), {cohort}))")
    return f"toUInt8(countIf({start}) > 0 AND ({'1' if n == 0 else returned}))"


def _expand_custom(root: exp.Expression) -> exp.Expression:
    def expand(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Anonymous):
            return node
        name = node.name
        args = list(node.expressions)
        if name.upper() == "FUNNEL":
            if len(args) < 2:
                raise _refuse("FUNNEL(<window>, <cond1>, <cond2>, …[, '<mode>']) needs a window and a condition")
            window = _window_seconds(args[0])
            conds, mode = _mode_arg(args[1:], FUNNEL_MODES, "FUNNEL", "ordered")
            if not 1 <= len(conds) <= MAX_FUNNEL_STEPS:
                raise _refuse(f"FUNNEL takes 1 to {MAX_FUNNEL_STEPS} step conditions")
            return sqlglot.parse_one(funnel_sql(window, [_sql(c) for c in conds], mode), read=DIALECT)
        if name == "RETENTION":
            rest, mode = _mode_arg(args, RETENTION_MODES, "RETENTION", "n-day")
            if len(rest) != 3:
                raise _refuse("RETENTION(<start cond>, <return cond>, <N>[, 'n-day'|'rolling'])")
            n = _literal_int(rest[2], "RETENTION's N (days)")
            return sqlglot.parse_one(retention_sql(_sql(rest[0]), _sql(rest[1]), n, mode), read=DIALECT)
        return node

    def project_tz(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "projecttimezone":
            if node.expressions:
                raise _refuse("projectTimezone() takes no arguments")
            return exp.Placeholder(this=TZ_PARAM, kind=exp.DataType.build("String"))
        return node

    return root.transform(project_tz).transform(expand)  # first: FUNNEL's conditions are re-parsed text


def rewrite(sql: str, database: str) -> Rewritten:
    """Check ``sql`` and produce the scoped query (see the module docstring); raises :class:`SqlRefused`."""
    if not sql or not sql.strip():
        raise _refuse("query is empty")
    if len(sql) > MAX_QUERY_CHARS:
        raise _refuse(f"query is longer than {MAX_QUERY_CHARS} characters")
    kind, explain = "", False
    first = _tokens(sql)
    if first and first[0].text.upper() == "EXPLAIN":
        explain = True
        kind, sql = _split_explain(sql[first[0].end + 1:])  # the tokenizer keeps the rest as one Command string
    root = _parse_one(sql)
    query = _check_query_root(root)
    normalized_query = query.sql(DIALECT)
    tables, params = _check_tree(query, database)
    read = frozenset(t.name for t in tables)
    # an alias named event_time could be what a WHERE's `event_time` means: then nothing is pushed down
    shadowed = any(a.alias == "event_time" for a in query.find_all(exp.Alias, exp.CTE))
    for table in tables:
        alias = table.alias or table.name
        bounds = tuple(_time_bounds(table, alias)) if table.name == EVENTS_TABLE and not shadowed else ()
        inner = sqlglot.parse_one(_scoped_source(table.name, database, bounds), read=DIALECT)
        table.replace(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(alias))))
    query = _expand_custom(query)
    prefix = "EXPLAIN " + (kind + " " if kind else "") if explain else ""
    return Rewritten(normalized=prefix + normalized_query, sql=prefix + query.sql(DIALECT), tables=read,
                     explain=explain, params=frozenset(params), placeholders=query.find(exp.Placeholder) is not None)
