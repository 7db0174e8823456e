"""Put column time zones back into chDB's Native output.

ClickHouse writes a top-level ``DateTime('Asia/Shanghai')`` column's type as plain ``DateTime`` to
clients of an old protocol revision; chDB's Native output always does so (it has no client revision;
``DateTime64(3, 'zone')`` and ``Nullable(DateTime('zone'))`` keep theirs). The values are the right
instants, but clickhouse-connect then reads them in the server's zone. The server knows the real
types (``DESCRIBE``), so it rewrites the type names in each block's header: that needs the byte
length of every column before the zoned one, which :func:`skip_column` knows for the common types
(numbers, dates, strings, Nullable, Array, Map, Tuple, LowCardinality, Decimal, UUID, IPs, Enums).
A block with a column it does not know is left as it is (the zone is then lost, as before).
"""

from __future__ import annotations

FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "UInt16": 2, "Int16": 2, "Date": 2, "BFloat16": 2, "UInt32": 4, "Int32": 4,
    "Float32": 4, "DateTime": 4, "Date32": 4, "IPv4": 4, "Decimal32": 4, "Time": 4, "UInt64": 8, "Int64": 8,
    "Float64": 8, "Decimal64": 8, "Time64": 8, "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
}  # fmt: skip


class Unknown(Exception):
    """A type whose Native layout this module does not know."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def split_type(t: str) -> tuple[str, list[str]]:
    """``Map(String, Array(UInt8))`` → ("Map", ["String", "Array(UInt8)"])."""
    t = t.strip()
    if "(" not in t:
        return t, []
    name, rest = t.split("(", 1)
    rest = rest[: rest.rfind(")")]
    args: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, c in enumerate(rest):
        if c == "'" and (i == 0 or rest[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth -= 1
        elif not quoted and c == "," and depth == 0:
            args.append(rest[start:i].strip())
            start = i + 1
    args.append(rest[start:].strip())
    return name.strip(), args


def skip_column(data: bytes, pos: int, type_name: str, rows: int) -> int:
    """The offset after ``rows`` values of ``type_name`` starting at ``pos`` (raises :class:`Unknown`)."""
    name, args = split_type(type_name)
    if rows == 0 and name != "LowCardinality":
        return pos
    if name in FIXED and (name != "DateTime" or len(args) <= 1):
        return pos + FIXED[name] * rows
    if name == "DateTime64":
        return pos + 8 * rows
    if name in ("Enum8", "Enum16"):
        return pos + (1 if name == "Enum8" else 2) * rows
    if name == "Decimal":
        precision = int(args[0])
        return pos + (4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32) * rows
    if name == "FixedString":
        return pos + int(args[0]) * rows
    if name == "String":
        for _ in range(rows):
            size, pos = read_varint(data, pos)
            pos += size
        return pos
    if name == "Nullable":
        return skip_column(data, pos + rows, args[0], rows)
    if name in ("Array", "Map"):
        end = pos + 8 * rows
        total = int.from_bytes(data[end - 8 : end], "little") if rows else 0
        pos = end
        for arg in args if name == "Map" else args[:1]:
            pos = skip_column(data, pos, arg, total)
        return pos
    if name == "Tuple":
        for arg in args:
            head, sep, tail = arg.partition(" ")
            element = tail if sep and "(" not in head else arg  # a named element: "name Type"
            pos = skip_column(data, pos, element, rows)
        return pos
    if name == "LowCardinality":
        if rows == 0:
            return pos
        inner = args[0]
        inner_name, inner_args = split_type(inner)
        keys_type = inner_args[0] if inner_name == "Nullable" else inner
        pos += 8  # key serialization version
        done = 0
        while done < rows:
            flags = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
            if flags & (1 << 9):  # HasAdditionalKeysBit
                keys = int.from_bytes(data[pos : pos + 8], "little")
                pos = skip_column(data, pos + 8, keys_type, keys)
            count = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8 + count * (1, 2, 4, 8)[flags & 0xFF]
            done += count
        return pos
    raise Unknown(type_name)


def restore_zones(data: bytes, zones: dict[int, str]) -> bytes:
    """Native blocks in ``data`` with column ``i``'s bare ``DateTime`` type replaced by ``zones[i]``."""
    if not zones:
        return data
    out = bytearray()
    pos = 0
    last = max(zones)
    try:
        while pos < len(data):
            ncols, p = read_varint(data, pos)
            nrows, p = read_varint(data, p)
            out += data[pos:p]
            for i in range(ncols):
                size, q = read_varint(data, p)
                q += size
                tsize, r = read_varint(data, q)
                type_name = data[r : r + tsize].decode()
                end_type = r + tsize
                if i in zones and type_name == "DateTime":
                    fixed = zones[i].encode()
                    out += data[p:q] + _encode_varint(len(fixed)) + fixed
                else:
                    out += data[p:end_type]
                if i >= last:  # nothing to change after this column: copy the rest of the block as it is
                    end = _skip_rest(data, end_type, ncols, i, nrows, type_name)
                    out += data[end_type:end]
                    p = end
                    break
                end = skip_column(data, end_type, type_name, nrows)
                out += data[end_type:end]
                p = end
            pos = p
    except (Unknown, IndexError, ValueError):
        return data
    return bytes(out)


def _skip_rest(data: bytes, pos: int, ncols: int, i: int, nrows: int, type_name: str) -> int:
    pos = skip_column(data, pos, type_name, nrows)
    for _ in range(i + 1, ncols):
        size, pos = read_varint(data, pos)
        pos += size
        tsize, pos = read_varint(data, pos)
        t = data[pos : pos + tsize].decode()
        pos = skip_column(data, pos + tsize, t, nrows)
    return pos


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
