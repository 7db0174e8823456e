"""Just enough SQL lexing to route a request: statement kind, FORMAT clause, where INSERT data starts.

The engine parses the SQL for real; this only needs to be right about what the HTTP layer decides:
which output format to announce, where an INSERT's head ends and its (possibly binary) data begins,
whether a statement is read-only, and that a request holds a single statement. Access control
does not rely on this lexer: restricted users are checked on ClickHouse's own parse (chserver.access). Strings, quoted
identifiers and comments are skipped so that a ``FORMAT`` or ``;`` inside them is not mistaken.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from chserver.errors import SYNTAX_ERROR, ClickHouseError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^'\\]|\\.|'')*'|\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$.*?\$(?P=tag)\$)
  | (?P<qid>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>[0-9][0-9A-Za-z_.]*)
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<semi>;)
  | (?P<other>.)
    """,
    re.S | re.X | re.A,
)

# Statements a read-only user may run (readonly=2 semantics: reads and session settings).
READ_ONLY_KINDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "SET", "USE", "("})

@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int
    depth: int


def tokens(text: str, pos: int = 0) -> Iterator[Token]:
    """Significant tokens (no whitespace or comments), each with its bracket depth."""
    depth = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        assert m is not None  # the last alternative matches any character
        kind = m.lastgroup or "other"
        pos = m.end()
        if kind in ("ws", "comment"):
            continue
        if kind == "close":
            depth = max(0, depth - 1)
        yield Token(kind, m.group(), m.start(), m.end(), depth)
        if kind == "open":
            depth += 1


@dataclass(frozen=True)
class Statement:
    """What the HTTP layer needs to know about one statement."""

    kind: str  # first keyword, upper case ("SELECT", "INSERT", …; "(" for a parenthesised query; "" if empty)
    output_format: str | None = None  # FORMAT clause of a non-INSERT statement (canonical name)
    insert_format: str | None = None  # INSERT … FORMAT <name>: data follows the head
    head_end: int = 0  # INSERT: offset of the FORMAT keyword (the head is text[:head_end])
    data_start: int = 0  # INSERT: offset where the data begins
    temporary: bool = False  # CREATE TEMPORARY …: state that must not outlive the request
    into_outfile: bool = False  # SELECT … INTO OUTFILE / INSERT … FROM INFILE (client-side features)


def _data_start(text: str, pos: int) -> int:
    """ClickHouse rule: data starts after the first newline if there is one, else after the blanks."""
    n = len(text)
    while pos < n and text[pos] in " \t\f":
        pos += 1
    if pos < n and text[pos] == "\r":
        pos += 1
    if pos < n and text[pos] == "\n":
        pos += 1
    return pos


def analyze(text: str, formats: dict[str, str]) -> Statement:
    """Classify ``text``. ``formats`` maps lower-cased format names to canonical ones.

    For an INSERT with a FORMAT clause, scanning stops at the format name: what follows is data and
    may be binary (``text`` may then be the latin-1 view of the raw bytes, so offsets are byte offsets).
    """
    it = tokens(text)
    first = next(it, None)
    if first is None:
        return Statement(kind="")
    kind = first.text.upper() if first.kind == "word" else first.text
    prev: Token = first
    second: Token | None = None
    output_format: str | None = None
    outfile = False
    temporary = False
    after_semicolon = False
    for tok in it:
        if after_semicolon:
            raise ClickHouseError(SYNTAX_ERROR, "Multi-statements are not allowed")
        if second is None:
            second = tok
            temporary = kind == "CREATE" and tok.kind == "word" and tok.text.upper() == "TEMPORARY"
        upper = tok.text.upper() if tok.kind == "word" else ""
        if prev.kind == "word" and tok.kind == "word":
            pair = (prev.text.upper(), upper)
            if pair in (("INTO", "OUTFILE"), ("FROM", "INFILE")):
                outfile = True
        if kind == "INSERT" and tok.depth == 0 and prev.kind == "word" and prev.text.upper() == "FORMAT" and tok.kind == "word":
            return Statement(
                kind=kind,
                insert_format=formats.get(tok.text.lower(), tok.text),
                head_end=prev.start,
                data_start=_data_start(text, tok.end),
            )
        if kind == "INSERT" and tok.depth == 0 and upper in ("VALUES", "SELECT", "WITH") and not outfile:
            # Inline data or a query: the whole text is SQL. VALUES data may be large: stop lexing here.
            return Statement(kind=kind)
        if tok.kind == "semi" and tok.depth == 0:
            after_semicolon = True
        elif (
            tok.kind == "word"
            and tok.depth == 0
            and prev.kind == "word"
            and prev.text.upper() == "FORMAT"
            and tok.text.lower() in formats
        ):
            output_format = formats[tok.text.lower()]
        prev = tok
    return Statement(
        kind=kind,
        output_format=output_format,
        temporary=temporary,
        into_outfile=outfile,
    )
