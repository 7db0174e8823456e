"""ClickHouse's HTTP request conventions: which URL parameters are protocol, which are settings.

Every URL parameter that is not part of the HTTP protocol itself is a ClickHouse setting for that
request only; ``param_<name>`` parameters bind ``{name:Type}`` placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chserver.auth import User
from chserver.engine import ExternalTable, QueryRequest
from chserver.errors import BAD_ARGUMENTS, NOT_IMPLEMENTED, READONLY, ClickHouseError

# URL parameters handled by the HTTP layer (ClickHouse's HTTPHandler and clickhouse-connect's transport set).
PROTOCOL_PARAMS = frozenset(
    {
        "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
        "user", "password", "quota_key", "buffer_size", "wait_end_of_query", "compress", "decompress",
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "client_protocol_version", "role", "add_http_cors_header",
        "http_native_compression_disable_checksumming_on_decompress", "http_response_buffer_size",
        "cancel_http_readonly_queries_on_client_close", "http_wait_end_of_query", "stacktrace", "readonly",
        "http_write_exception_in_output_format",
    }
)  # fmt: skip

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = ("1", "true")


_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Words that start an expression in a column declaration: refused in an external table's structure,
# which is put into CREATE TEMPORARY TABLE by the server (a DEFAULT (SELECT … file()) would run as it).
_EXPRESSION_WORDS = frozenset(
    {"DEFAULT", "MATERIALIZED", "ALIAS", "EPHEMERAL", "CODEC", "TTL", "COMMENT", "SETTINGS", "STATISTICS", "PRIMARY",
     "KEY", "INDEX", "PROJECTION", "CONSTRAINT", "CHECK", "ASSUME", "AS", "SELECT"}
)  # fmt: skip


def external_structure(name: str, structure: str | None, types: str | None) -> str:
    """``name Type, …`` for CREATE TEMPORARY TABLE: column names and types only (``_types`` → ``_1 T1, _2 T2``)."""
    from chserver.sql import tokens

    if structure is None and types is None:
        raise ClickHouseError(
            BAD_ARGUMENTS, f"Neither structure nor types have been provided for external table {name}: "
            f"send {name}_structure or {name}_types"
        )
    text = structure if structure is not None else types
    assert text is not None
    toks = list(tokens(text))
    for tok in toks:
        if tok.kind in ("semi", "comment") or (tok.kind == "word" and tok.text.upper() in _EXPRESSION_WORDS) or (
            tok.kind == "other" and tok.text not in ",=-"
        ):
            raise ClickHouseError(
                BAD_ARGUMENTS, f"Invalid {name}_{'structure' if structure is not None else 'types'}: column names and "
                f"types only ({tok.text!r} is not allowed)"
            )
    if not toks:
        raise ClickHouseError(BAD_ARGUMENTS, f"Empty structure for external table {name}")
    if structure is not None:
        return text
    cuts = [t.start for t in toks if t.depth == 0 and t.text == ","]
    pieces = [text[a:b].strip() for a, b in zip([0, *(c + 1 for c in cuts)], [*cuts, len(text)], strict=True)]
    return ", ".join(f"_{i + 1} {t}" for i, t in enumerate(pieces))


def build_query_request(
    method: str, params: Mapping[str, str], body: bytes, user: User, files: list[tuple[str, bytes]] | None = None
) -> QueryRequest:
    """Map one HTTP request onto a :class:`QueryRequest` (``body`` already decompressed)."""
    if params.get("compress", "0") in _TRUE:
        raise ClickHouseError(NOT_IMPLEMENTED, "compress=1 (native block compression) is not supported; use HTTP compression")
    if params.get("decompress", "0") in _TRUE:
        raise ClickHouseError(NOT_IMPLEMENTED, "decompress=1 (native block compression) is not supported; use Content-Encoding")
    query = params.get("query")
    if query and body:
        raw = query.encode() + b"\n" + body
    elif query:
        raw = query.encode()
    else:
        raw = body

    external: list[ExternalTable] = []
    table_params: set[str] = set()
    for name, data in files or ():
        if not _TABLE_NAME.match(name):
            raise ClickHouseError(BAD_ARGUMENTS, f"Invalid external table name {name!r}")
        keys = {k: f"{name}_{k}" for k in ("structure", "types", "format")}
        table_params.update(keys.values())
        structure = external_structure(name, params.get(keys["structure"]), params.get(keys["types"]))
        external.append(ExternalTable(name, structure, params.get(keys["format"]) or "TabSeparated", data))

    settings: dict[str, str] = {}
    bind: dict[str, str] = {}
    for key, value in params.items():
        if key in table_params:
            continue
        if key.startswith("param_"):
            bind[key[6:]] = value
        elif key not in PROTOCOL_PARAMS:
            if not _SETTING_NAME.match(key):
                raise ClickHouseError(BAD_ARGUMENTS, f"Invalid setting name in the URL: {key!r}")
            user.profile.check_setting(user.name, key, value)
            settings[key] = value
    database = params.get("database") or None
    if database is not None:
        user.profile.check_database(user.name, database)

    # GET requests and the read-only user can only read (readonly=2, as in ClickHouse); a client may
    # ask for the stricter readonly=1 but never relax it.
    readonly = 0
    requested = params.get("readonly", "0").strip()
    if requested not in ("", "0"):
        readonly = 1 if requested == "1" else 2
    elif requested == "0" and "readonly" in params and user.profile.restricted:
        raise ClickHouseError(READONLY, f"{user.name}: Cannot modify 'readonly' setting in readonly mode")
    if (method == "GET" or user.readonly) and readonly == 0:
        readonly = 2
    return QueryRequest(
        raw=raw,
        user=user.name,
        database=database,
        default_format=params.get("default_format") or None,
        settings=settings,
        params=bind,
        readonly=readonly,
        profile=user.profile,
        session_id=params.get("session_id") or None,
        session_timeout=_session_timeout(params.get("session_timeout")),
        session_check=params.get("session_check", "0") in _TRUE,
        external=external,
    )


def _session_timeout(value: str | None) -> int:
    if value is None or value == "":
        return 60
    if not value.isdigit() or not 0 < int(value) <= 3600:
        raise ClickHouseError(BAD_ARGUMENTS, f"Invalid session timeout: {value!r} (1..3600 seconds)")
    return int(value)
