"""ClickHouse-style errors: ``Code: N. DB::Exception: …`` bodies and the HTTP status ClickHouse uses.

Codes were read from the engine itself (``errorCodeToName``), the status mapping follows ClickHouse's
``exceptionCodeToHTTPStatus`` so clients that branch on status (or on the code) behave as with a real server.
"""

from __future__ import annotations

import re

# Error codes this server raises itself.
UNSUPPORTED_METHOD = 1
BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_FORMAT = 73
READONLY = 164
QUERY_IS_TOO_LARGE = 229
ZLIB_INFLATE_FAILED = 354
ACCESS_DENIED = 497
AUTHENTICATION_FAILED = 516
ZSTD_DECODER_FAILED = 561
LZ4_DECODER_FAILED = 618
SESSION_NOT_FOUND = 372
SESSION_IS_LOCKED = 373
TOO_MANY_SIMULTANEOUS_QUERIES = 202
QUERY_WAS_CANCELLED = 394
QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING = 216
STD_EXCEPTION = 1001

_NAMES = {
    UNSUPPORTED_METHOD: "UNSUPPORTED_METHOD",
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_FORMAT: "UNKNOWN_FORMAT",
    READONLY: "READONLY",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    ZLIB_INFLATE_FAILED: "ZLIB_INFLATE_FAILED",
    ACCESS_DENIED: "ACCESS_DENIED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    ZSTD_DECODER_FAILED: "ZSTD_DECODER_FAILED",
    LZ4_DECODER_FAILED: "LZ4_DECODER_FAILED",
    SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    SESSION_IS_LOCKED: "SESSION_IS_LOCKED",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    QUERY_WAS_CANCELLED: "QUERY_WAS_CANCELLED",
    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING: "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
    STD_EXCEPTION: "STD_EXCEPTION",
}

_HTTP_STATUS: dict[int, int] = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_*, DUPLICATE_COLUMN, ILLEGAL_COLUMN, AST errors,
    # THERE_IS_NO_COLUMN, SYNTAX_ERROR, INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **dict.fromkeys(
        (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321), 400
    ),
    # UNKNOWN_TABLE, _FUNCTION, _IDENTIFIER, _TYPE, _STORAGE, _DATABASE, _SETTING, _DIRECTION_OF_SORTING,
    # _AGGREGATE_FUNCTION, _FORMAT, _DATABASE_ENGINE, _TYPE_OF_QUERY, _ROLE
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    48: 501,  # NOT_IMPLEMENTED
    209: 503,  # SOCKET_TIMEOUT
    216: 400,  # QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING
    76: 503,  # CANNOT_OPEN_FILE
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    202: 503,  # TOO_MANY_SIMULTANEOUS_QUERIES (retry later)
    439: 503,  # CANNOT_SCHEDULE_TASK
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}

_CODE_RE = re.compile(r"Code: (\d+)\. ")


def http_status_for(code: int) -> int:
    return _HTTP_STATUS.get(code, 500)


class ClickHouseError(Exception):
    """An error reported to the client the way ClickHouse reports it."""

    def __init__(self, code: int, message: str, name: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = _NAMES.get(code, "") if name is None else name
        self.status_override: int | None = None

    @property
    def http_status(self) -> int:
        return self.status_override or http_status_for(self.code)

    def body(self, version: str) -> str:
        text = f"Code: {self.code}. DB::Exception: {self.message}"
        if self.name and f"({self.name})" not in text:
            text += f" ({self.name})"
        if "(version " not in text:
            text += f" (version {version})"
        return text + "\n"

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Turn a chDB error (``[prefix: ]Code: 60. DB::Exception: … (UNKNOWN_TABLE)``) into a ClickHouseError."""
        text = str(exc).strip()
        m = _CODE_RE.search(text)
        if m is None:
            return cls(STD_EXCEPTION, text or type(exc).__name__)
        rest = text[m.end():].removeprefix("DB::Exception: ")
        return cls(int(m.group(1)), rest, name="")
