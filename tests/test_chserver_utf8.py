"""SQL that is not valid UTF-8 is refused with a clear 400 (BAD_ARGUMENTS), wherever it comes from."""

from __future__ import annotations

import httpx
import pytest

from tests.chserver_support import READER, ChServer

BAD = b"SELECT format(Parquet, $data$PAR1\xff\xfe\x00$data$)"


@pytest.mark.parametrize("user", [None, READER], ids=["writer", "reader"])
def test_body_that_is_not_utf8_is_a_400(chserver: ChServer, user: tuple[str, str] | None) -> None:
    r = httpx.post(chserver.url, content=BAD, auth=user or chserver.auth, timeout=30)
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] == "36", r.text
    assert f"not valid UTF-8 (byte 0xff at offset {BAD.index(0xFF)})" in r.text


def test_url_query_and_parameters_that_are_not_utf8_are_400_naming_the_parameter(chserver: ChServer) -> None:
    # percent-encoded bytes that are not UTF-8 would otherwise become U+FFFD and run as another query
    r = httpx.post(chserver.url + "/?query=SELECT%20%27%FF%27", auth=chserver.auth, timeout=30)
    assert r.status_code == 400 and "URL parameter 'query' is not valid UTF-8" in r.text, r.text
    r = httpx.post(chserver.url + "/?query=SELECT%20%7Bs%3AString%7D&param_s=%C3%28", auth=chserver.auth, timeout=30)
    assert r.status_code == 400 and "URL parameter 'param_s'" in r.text, r.text
    # valid UTF-8 (also percent-encoded) still works
    r = httpx.post(chserver.url + "/?query=SELECT%20%7Bs%3AString%7D&param_s=%C3%A9t%C3%A9", auth=chserver.auth, timeout=30)
    assert r.status_code == 200 and r.text == "été\n"


def test_form_field_that_is_not_utf8_is_a_400(chserver: ChServer) -> None:
    r = httpx.post(chserver.url, data={"param_x": "1"}, files={"query": (None, BAD)}, auth=chserver.auth, timeout=30)
    assert r.status_code == 400 and "Form field 'query' is not valid UTF-8" in r.text, r.text


def test_binary_insert_data_after_format_is_still_accepted(chserver: ChServer) -> None:
    t = "t_utf8_bin"
    httpx.post(chserver.url, content=f"CREATE TABLE IF NOT EXISTS {t} (b String) ENGINE = Memory", auth=chserver.auth)
    data = b"\x03\xff\xfe\x00"  # RowBinary: one String of three non-UTF-8 bytes
    r = httpx.post(chserver.url, params={"query": f"INSERT INTO {t} FORMAT RowBinary"}, content=data, auth=chserver.auth)
    assert r.status_code == 200, r.text
    r = httpx.post(chserver.url, content=f"SELECT hex(b) FROM {t}", auth=chserver.auth)
    assert r.text == "FFFE00\n"
    httpx.post(chserver.url, content=f"DROP TABLE {t}", auth=chserver.auth)
