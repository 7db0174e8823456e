"""The SQL routing chserver does before the engine sees a statement (no server needed)."""

from __future__ import annotations

import pytest

from chserver.errors import ClickHouseError, http_status_for
from chserver.sql import analyze

FORMATS = {f.lower(): f for f in ["Native", "TabSeparated", "JSONEachRow", "CSV", "Parquet", "RowBinary", "JSON"]}


def test_kind_and_output_format() -> None:
    s = analyze("select 1 format jsoneachrow", FORMATS)
    assert (s.kind, s.output_format) == ("SELECT", "JSONEachRow")
    assert analyze("  -- comment\n/* c */ WITH 1 AS x SELECT x", FORMATS).kind == "WITH"
    assert analyze("(SELECT 1)", FORMATS).kind == "("
    assert analyze("", FORMATS).kind == ""


def test_format_in_strings_identifiers_and_subqueries_is_not_a_clause() -> None:
    assert analyze("SELECT 'x FORMAT JSON' AS s", FORMATS).output_format is None
    assert analyze("SELECT `FORMAT` FROM t", FORMATS).output_format is None
    assert analyze("SELECT * FROM (SELECT 1 FORMAT JSON)", FORMATS).output_format is None
    assert analyze("SELECT format AS f FROM t", FORMATS).output_format is None  # column named format
    assert analyze("SELECT 1 FORMAT CSV SETTINGS max_threads = 1", FORMATS).output_format == "CSV"


def test_insert_head_and_data_offsets() -> None:
    text = "INSERT INTO t (a, `format`) FORMAT Native\n\x0a\x02binary"
    s = analyze(text, FORMATS)
    assert s.kind == "INSERT" and s.insert_format == "Native"
    assert text[: s.head_end].rstrip() == "INSERT INTO t (a, `format`)"
    assert text[s.data_start :] == "\x0a\x02binary"  # exactly one newline skipped, data bytes untouched
    s = analyze("INSERT INTO t FORMAT CSV   1,2", FORMATS)
    assert "INSERT INTO t FORMAT CSV   1,2"[s.data_start :] == "1,2"
    s = analyze("INSERT INTO t FORMAT TabSeparated \r\n1\t2", FORMATS)
    assert "INSERT INTO t FORMAT TabSeparated \r\n1\t2"[s.data_start :] == "1\t2"


def test_insert_values_and_select_are_plain_sql() -> None:
    for text in [
        "INSERT INTO t VALUES (1, 'FORMAT CSV')",
        "INSERT INTO t SELECT * FROM s FORMAT CSV",
        "INSERT INTO t WITH 1 AS x SELECT x",
    ]:
        s = analyze(text, FORMATS)
        assert s.kind == "INSERT" and s.insert_format is None


def test_multi_statements_are_refused_but_a_trailing_semicolon_is_fine() -> None:
    assert analyze("SELECT 1;", FORMATS).kind == "SELECT"
    assert analyze("SELECT ';' ; -- done", FORMATS).kind == "SELECT"
    with pytest.raises(ClickHouseError) as exc:
        analyze("SELECT 1; DROP TABLE t", FORMATS)
    assert exc.value.code == 62 and exc.value.http_status == 400


def test_heredoc_literals_hide_semicolons_and_format() -> None:
    """dbt's persist_docs comments come as $$…$$ / $tag$…$tag$ strings: a ';' or FORMAT inside is data."""
    s = analyze("ALTER TABLE t COMMENT COLUMN a $$x; y FORMAT JSON$$", FORMATS)
    assert s.kind == "ALTER" and s.output_format is None
    assert analyze("SELECT $doc$ a;b $ $doc$ FORMAT JSON", FORMATS).output_format == "JSON"
    with pytest.raises(ClickHouseError):
        analyze("SELECT $a$x$a$; SELECT 1", FORMATS)


def test_state_and_privilege_markers() -> None:
    assert analyze("CREATE TEMPORARY TABLE x (a UInt8)", FORMATS).temporary
    assert not analyze("CREATE TABLE x (a UInt8) ENGINE = Memory", FORMATS).temporary
    assert analyze("SELECT 1 INTO OUTFILE '/tmp/x'", FORMATS).into_outfile


def test_http_status_mapping_follows_clickhouse() -> None:
    codes = (62, 60, 81, 115, 164, 516, 497, 194, 48, 33)
    assert [http_status_for(c) for c in codes] == [400, 404, 404, 404, 500, 403, 403, 401, 501, 500]
