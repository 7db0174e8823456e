"""HTTP body compression: request ``Content-Encoding`` and response ``Accept-Encoding`` (gzip, deflate, zstd, lz4).

lz4 is the LZ4 *frame* format, which is what clickhouse-connect sends and expects.
"""

from __future__ import annotations

import zlib

import lz4.frame
import zstandard

from chserver.errors import LZ4_DECODER_FAILED, NOT_IMPLEMENTED, ZLIB_INFLATE_FAILED, ZSTD_DECODER_FAILED, ClickHouseError

SUPPORTED = ("zstd", "lz4", "gzip", "deflate")
_SUPPORTED_MSG = "Only 'gzip', 'deflate', 'zstd', 'lz4' and 'identity' are supported"


def _zlib_decompress(data: bytes, wbits: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data) + d.flush()
    if not d.eof:
        raise zlib.error("truncated stream")
    return out


def _zstd_decompress(data: bytes) -> bytes:
    """All frames of a zstd stream; a truncated last frame is an error (stream readers hide it)."""
    parts: list[bytes] = []
    rest = data
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        parts.append(d.decompress(rest))
        if not d.eof:
            raise zstandard.ZstdError("truncated zstd frame")
        rest = d.unused_data
    return b"".join(parts)


def _lz4_decompress(data: bytes) -> bytes:
    """All frames of an LZ4 stream: clickhouse-connect sends one frame per block, so a body of several blocks
    is several frames (decoding only the first silently dropped every later block)."""
    parts: list[bytes] = []
    rest = data
    while rest:
        d = lz4.frame.LZ4FrameDecompressor()
        parts.append(d.decompress(rest))
        if not d.eof:
            raise RuntimeError("truncated LZ4 frame")
        rest = d.unused_data
    return b"".join(parts)


def decompress(data: bytes, encoding: str | None) -> bytes:
    """Decode a request body; a wrong or truncated encoding is a ClickHouse error, never a crash."""
    method = (encoding or "").strip().lower()
    if method in ("", "identity", "none"):
        return data
    try:
        if method in ("gzip", "x-gzip"):
            return _zlib_decompress(data, 16 + zlib.MAX_WBITS)
        if method == "deflate":
            return _zlib_decompress(data, zlib.MAX_WBITS)
    except zlib.error as exc:
        raise ClickHouseError(ZLIB_INFLATE_FAILED, f"inflate failed: {exc}") from None
    if method == "zstd":
        try:
            return _zstd_decompress(data)
        except zstandard.ZstdError as exc:
            raise ClickHouseError(ZSTD_DECODER_FAILED, f"Zstd stream decoding failed: {exc}") from None
    if method == "lz4":
        try:
            return _lz4_decompress(data)
        except RuntimeError as exc:
            raise ClickHouseError(LZ4_DECODER_FAILED, f"LZ4 decompression failed: {exc}") from None
    raise ClickHouseError(NOT_IMPLEMENTED, f"Unknown HTTP Content-Encoding '{encoding}'. {_SUPPORTED_MSG}")


def choose(accept_encoding: str | None) -> str | None:
    """The encoding to answer with, by the client's preference (q-values honoured, q=0 refused)."""
    if not accept_encoding:
        return None
    offers: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_encoding.split(",")):
        name, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        name = name.strip().lower()
        if name in SUPPORTED and q > 0:
            offers.append((-q, i, name))
    return min(offers)[2] if offers else None


def compress(data: bytes, method: str, level: int | None = None) -> bytes:
    if method == "gzip":
        c = zlib.compressobj(level if level is not None else 3, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if method == "deflate":
        return zlib.compress(data, level if level is not None else 3)
    if method == "zstd":
        return zstandard.ZstdCompressor(level=level if level is not None else 3).compress(data)
    if method == "lz4":
        return lz4.frame.compress(data)
    raise ValueError(method)


class Compressor:
    """Incremental response compression for a streamed answer (one stream, many pieces)."""

    def __init__(self, method: str, level: int | None = None):
        self.method = method
        if method == "gzip":
            self._c = zlib.compressobj(level if level is not None else 3, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif method == "deflate":
            self._c = zlib.compressobj(level if level is not None else 3)
        elif method == "zstd":
            self._c = zstandard.ZstdCompressor(level=level if level is not None else 3).compressobj()
        elif method == "lz4":
            self._c = lz4.frame.LZ4FrameCompressor()
            self._started = False
        else:
            raise ValueError(method)

    def compress(self, data: bytes) -> bytes:
        if self.method == "lz4":
            head = b""
            if not self._started:
                self._started = True
                head = self._c.begin()
            return head + self._c.compress(data)
        return self._c.compress(data)

    def flush(self) -> bytes:
        if self.method == "lz4":
            return (b"" if self._started else self._c.begin()) + self._c.flush()
        return self._c.flush()
