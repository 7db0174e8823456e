"""Long bound parameters: clickhouse-connect switches to multipart/form-data fields (query, param_*)."""

from __future__ import annotations

import clickhouse_connect
import httpx

from tests.chserver_support import ChServer


def test_large_parameters_sent_as_form_fields(chserver: ChServer) -> None:
    ids = [f"device-{i:06d}" for i in range(5000)]  # far beyond the URL-length switch-over
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, password=chserver.password)
    result = client.query("SELECT length({ids:Array(String)}), {ids:Array(String)}[4321]", parameters={"ids": ids})
    assert result.result_rows == [(5000, "device-004320")]
    forced = clickhouse_connect.get_client(
        host=chserver.host, port=chserver.port, password=chserver.password, form_encode_query_params=True
    )
    assert forced.query("SELECT {n:UInt8} + 1", parameters={"n": 41}).result_rows == [(42,)]


def test_file_parts_external_data_are_refused(chserver: ChServer) -> None:
    files = {"ext": ("data.tsv", b"1\n2\n", "text/tab-separated-values")}
    r = httpx.post(chserver.url + "/", params={"query": "SELECT 1"}, files=files, timeout=30, auth=chserver.auth)
    assert r.status_code == 501 and r.headers["X-ClickHouse-Exception-Code"] == "48", r.text
