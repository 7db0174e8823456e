"""Streaming results: chDB's ``send_query`` hands out one formatted block at a time.

Each chunk chDB returns is the block formatted on its own, so only formats whose output is a plain
concatenation of per-block pieces can be streamed (Native, RowBinary, TSV, CSV, JSON*EachRow …);
a ``…WithNames``/``…WithNamesAndTypes`` chunk repeats its header, which is cut from every chunk but
the first. Other formats (JSON, Pretty, Parquet, Arrow …) are answered whole, as before.

An error after the response has started reaches the client as ClickHouse (25.11+) sends it: the
response carries ``X-ClickHouse-Exception-Tag: <tag>`` and the body ends with
``__exception__\\r\\n<tag>\\r\\n<message>\\n<length> <tag>\\r\\n__exception__\\r\\n`` — what
clickhouse-connect turns into ``StreamFailureError``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from chserver.errors import ClickHouseError
from chserver.native import read_varint

log = logging.getLogger(__name__)

_TEXT_STREAM = (
    "tabseparated", "tsv", "tabseparatedraw", "tsvraw", "csv", "jsoneachrow", "jsonlines", "ndjson", "jsonstringseachrow",
    "jsoncompacteachrow", "jsoncompactstringseachrow", "lineasstring", "rawblob", "custom_separated",
)  # fmt: skip
STREAM_FORMATS = frozenset(
    {"native", "rowbinary", "rowbinarywithnames", "rowbinarywithnamesandtypes"}
    | set(_TEXT_STREAM)
    | {f + suffix for f in _TEXT_STREAM for suffix in ("withnames", "withnamesandtypes")}
)



def header_length(fmt: str, chunk: bytes) -> int:
    """Bytes of the names/types header at the start of ``chunk`` (0 for formats without one)."""
    f = fmt.lower()
    if f.startswith("rowbinarywithnames"):
        if not chunk:
            return 0
        n, pos = read_varint(chunk, 0)
        for _ in range(n * (2 if f.endswith("andtypes") else 1)):
            size, pos = read_varint(chunk, pos)
            pos += size
        return pos
    lines = 2 if f.endswith("withnamesandtypes") else 1 if f.endswith("withnames") else 0
    pos = 0
    quoted = False
    while lines and pos < len(chunk):  # CSV names are quoted and may hold a newline; TSV/JSON escape it
        c = chunk[pos]
        if c == 0x22 and f.startswith("csv"):
            quoted = not quoted
        elif c == 0x0A and not quoted:
            lines -= 1
        pos += 1
    return pos


def exception_block(tag: str, message: str) -> bytes:
    """ClickHouse's in-band error marker for a response that has already started."""
    text = message.rstrip("\n").encode()
    return b"__exception__\r\n" + tag.encode() + b"\r\n" + text + b"\n" + str(len(text)).encode() + b" " + tag.encode() \
        + b"\r\n__exception__\r\n"


class ResultStream:
    """The rest of a result after the first chunks: ``fetch()`` blocks for the next piece (call off the event loop).

    ``on_close(reusable)`` gives the connection back (or closes it) and forgets the running query;
    it runs exactly once, when the stream is exhausted, fails or is closed early.
    """

    def __init__(self, conn: Any, handle: Any, fmt: str, header: bytes, on_close: Callable[[bool], None],
                 kill: Callable[[], None]):
        self._conn = conn
        self._handle = handle
        self._fmt = fmt
        self._header = header
        self._on_close = on_close
        self._kill = kill
        self.done = False
        self.transform: Callable[[bytes], bytes] | None = None  # e.g. time zones put back into Native headers
        self.rows_read = 0
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._closed = False

    def fetch(self) -> bytes | None:
        """The next piece (header already cut), or None at the end; an engine error → ClickHouseError."""
        if self.done:
            return None
        try:
            chunk = self._conn._conn.streaming_fetch_result(self._handle)
            data = chunk.bytes() if chunk is not None else b""
        except RuntimeError as exc:
            self._finish(False)
            raise ClickHouseError.from_engine(exc) from None
        if chunk is None or (not data and chunk.rows_read() == 0):
            self._finish(True)
            return None
        self.rows_read += chunk.rows_read()
        self.bytes_read += chunk.bytes_read()
        if self._header and data.startswith(self._header):
            data = data[len(self._header) :]
        return self.transform(data) if self.transform else data

    def close(self) -> None:
        """Stop early (client gone, KILL QUERY): kill the engine's query, drop the stream, release the connection."""
        if self.done:
            return
        try:
            self._kill()
            self._conn._conn.streaming_cancel_query(self._handle)
        except Exception:  # noqa: BLE001 - the connection is closed below anyway
            log.debug("cancelling a stream failed", exc_info=True)
        self._finish(False)

    def _finish(self, reusable: bool) -> None:
        with self._lock:  # close() (client gone) may race a fetch() failing on the killed query
            if self.done and self._closed:
                return
            self.done = True
            self._closed = True
        self._on_close(reusable)
