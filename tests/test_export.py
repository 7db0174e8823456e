"""Raw export: `GET /api/2/export` (zip of gzipped JSONL per hour) and `eventpipe export` to moto's S3 server.

The lake is built the real way: raw rows (with duplicate insert_ids and a second project) enriched by
``enrichment.rules.enrich_hour`` and written where the enriched_events asset writes them.
The expectation is computed independently from the raw rows: one row per (project, insert_id).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn

from embedded.broker import free_port
from enrichment.lake_io import write_enriched
from enrichment.rules import enrich_hour, to_parquet_bytes
from eventpipe_core.event_model import RAW_EVENT_SCHEMA
from eventpipe_core.export import ExportRangeError, parse_range
from eventpipe_core.lake_store import LocalLakeStore, open_lake
from eventpipe_core.metadata import get_metadata_store
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from query_service.app import create_app
from tests.conftest import AWS_TEST_KEYS
from tests.orchestration_support import raw_row

H0 = datetime(2026, 3, 2, 22, tzinfo=UTC)  # three hours crossing midnight: 22, 23, 00
HOURS = [H0 + timedelta(hours=i) for i in range(3)]


def _raw_rows() -> list[dict]:
    rows = []
    for h, hour in enumerate(HOURS):
        for i in range(40):
            t = hour + timedelta(minutes=i, seconds=h)
            project = "shop" if i % 4 else "other"
            rows.append(raw_row(f"{project}-{h}-{i}", t, offset=len(rows), project=project, user_id=f"user-{i % 7:03d}",
                                event_properties=json.dumps({"i": i, "h": h}), country="France"))
        # a retried event (same insert_id, same time, landed again later) must be exported once
        t = hour + timedelta(minutes=5, seconds=h)
        rows.append(raw_row(f"shop-{h}-5", t, offset=len(rows), project="shop", user_id="user-005",
                            event_properties=json.dumps({"i": 5, "h": h}), received_at=t + timedelta(seconds=30)))
    return rows


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-lake")
    lake = LocalLakeStore(root)
    rows = _raw_rows()
    for hour in HOURS:
        mine = [r for r in rows if hour <= r["event_time"] < hour + timedelta(hours=1)]
        result = enrich_hour(pa.Table.from_pylist(mine, schema=RAW_EVENT_SCHEMA), hour_start=hour)
        write_enriched(lake, hour, to_parquet_bytes(result.table))
    return root


def expected_ids(project: str, hours: list[datetime]) -> dict[datetime, set[str]]:
    out: dict[datetime, set[str]] = {}
    for r in _raw_rows():
        hour = r["event_time"].replace(minute=0, second=0)
        if r["project"] == project and hour in hours:
            out.setdefault(hour, set()).add(r["insert_id"])
    return out


@pytest.fixture(scope="module")
def app_url(lake_dir: Path) -> Iterator[tuple[str, dict[str, tuple[str, str]]]]:
    """The query service app (its Basic auth, this route) in a real uvicorn server; credentials per project."""
    settings = load_settings(eventpipe_home=lake_dir.parent, lake_url=lake_dir.as_uri(), export_max_hours=48)
    store = get_metadata_store(settings)
    creds = {p: create_key_with_secret(store, p) for p in ("shop", "other", "nobody")}
    app = create_app(settings, store=store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", creds
    server.should_exit = True
    thread.join(timeout=10)
    store.dispose()


class Client:
    def __init__(self, url: str, creds: dict[str, tuple[str, str]]):
        self.http = httpx.Client(base_url=url, timeout=30)
        self.creds = creds

    def get(self, path: str, params: dict, project: str | None = None) -> httpx.Response:
        return self.http.get(path, params=params, auth=self.creds[project] if project else None)


@pytest.fixture(scope="module")
def client(app_url: tuple[str, dict[str, tuple[str, str]]]) -> Iterator[Client]:
    c = Client(*app_url)
    yield c
    c.http.close()


def read_zip(body: bytes) -> dict[str, list[dict]]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {name: [json.loads(line) for line in gzip.decompress(zf.read(name)).splitlines()] for name in zf.namelist()}


def test_export_zip_has_one_gzipped_jsonl_per_hour_one_row_per_insert_id(client: Client) -> None:
    r = client.get("/api/2/export", params={"start": "20260302T22", "end": "20260303T0"}, project="shop")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    files = read_zip(r.content)
    assert sorted(files) == ["shop/shop_2026-03-02_22#0.json.gz", "shop/shop_2026-03-02_23#0.json.gz",
                             "shop/shop_2026-03-03_0#0.json.gz"]
    want = expected_ids("shop", HOURS)
    for hour, name in zip(HOURS, sorted(files), strict=True):
        rows = files[name]
        ids = [row["insert_id"] for row in rows]
        assert len(ids) == len(set(ids)) == len(want[hour])  # the retried event once
        assert set(ids) == want[hour]
        assert all(row["project"] == "shop" and row["$insert_id"] == row["insert_id"] for row in rows)
        times = [row["event_time"] for row in rows]
        assert times == sorted(times) and all(t.startswith(f"{hour:%Y-%m-%d %H}:") for t in times)
        first = rows[0]
        assert isinstance(first["event_properties"], dict) and first["event_properties"]["h"] == HOURS.index(hour)
        # enriched fields are there: identity, session, user agent
        assert first["actor_id"] == first["user_id"] and first["session_id"] > 0 and first["ua_browser"] == "Chrome"


def test_export_end_hour_is_included_and_other_projects_are_not_visible(client: Client) -> None:
    r = client.get("/api/2/export", params={"start": "20260302T23", "end": "20260302T23"}, project="other")
    assert r.status_code == 200
    files = read_zip(r.content)
    assert list(files) == ["other/other_2026-03-02_23#0.json.gz"]
    got = {row["insert_id"] for row in files["other/other_2026-03-02_23#0.json.gz"]}
    assert got == expected_ids("other", [HOURS[1]])[HOURS[1]]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start": "2026030222", "end": "20260303T0"}, "start"),
        ({"start": "20260302T22"}, "end"),
        ({"start": "20260302T22", "end": "20260302T24"}, "end"),
        ({"start": "20260230T1", "end": "20260302T2"}, "start"),
        ({"start": "20260303T0", "end": "20260302T22"}, "end"),
        ({"start": "20260101T0", "end": "20260110T0"}, "end"),  # wider than EXPORT_MAX_HOURS=48
    ],
)
def test_malformed_range_is_400_naming_the_parameter(client: Client, params: dict, param: str) -> None:
    r = client.get("/api/2/export", params=params, project="shop")
    assert r.status_code == 400
    assert r.json()["parameter"] == param and param in r.json()["error"]


def test_nothing_in_range_is_404_and_no_credentials_is_401(client: Client) -> None:
    r = client.get("/api/2/export", params={"start": "20260301T0", "end": "20260301T5"}, project="shop")
    assert r.status_code == 404
    r = client.get("/api/2/export", params={"start": "20260302T22", "end": "20260302T22"}, project="nobody")
    assert r.status_code == 404
    assert client.get("/api/2/export", params={"start": "20260302T22", "end": "20260302T22"}).status_code == 401


def test_parse_range_accepts_one_digit_hours() -> None:
    assert parse_range("20260302T5", "20260302T07", 10) == [datetime(2026, 3, 2, h, tzinfo=UTC) for h in (5, 6, 7)]
    with pytest.raises(ExportRangeError):
        parse_range("20260302T5", "20260302T07", 2)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "export", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_export_to_s3_jsonl_and_parquet(lake_dir: Path, s3_server: str, s3_bucket: str) -> None:
    env = os.environ | {"EVENTPIPE_HOME": str(lake_dir.parent), "LAKE_URL": lake_dir.as_uri(), "AWS_ENDPOINT_URL": s3_server,
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    want = expected_ids("shop", HOURS)
    common = ["--project", "shop", "--start", "20260302T21", "--end", "20260303T01"]
    r = _cli(env, *common, "--to", f"s3://{s3_bucket}/exports/jsonl")
    assert r.returncode == 0, r.stderr
    assert "exported 90 events in 3 hourly objects" in r.stdout  # 30 shop events per hour, retry once
    dest = open_lake(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS), f"s3://{s3_bucket}/exports/jsonl")
    keys = sorted(dest.list(""))
    assert keys == ["shop/shop_2026-03-02_22#0.json.gz", "shop/shop_2026-03-02_23#0.json.gz", "shop/shop_2026-03-03_0#0.json.gz"]
    for hour, key in zip(HOURS, keys, strict=True):
        assert {json.loads(line)["insert_id"] for line in gzip.decompress(dest.get(key)).splitlines()} == want[hour]

    r = _cli(env, *common, "--to", f"s3://{s3_bucket}/exports/pq", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    dest = open_lake(load_settings(aws_endpoint_url=s3_server, **AWS_TEST_KEYS), f"s3://{s3_bucket}/exports/pq")
    keys = sorted(dest.list(""))
    assert keys[0] == "shop/event_date=2026-03-02/event_hour=22/part-00000.parquet" and len(keys) == 3
    table = pq.read_table(io.BytesIO(dest.get(keys[1])))
    assert set(table.column("insert_id").to_pylist()) == want[HOURS[1]] and "session_id" in table.schema.names

    r = _cli(env, *common[:2], "--start", "2026-03-02", "--end", "20260303T01", "--to", f"s3://{s3_bucket}/x")
    assert r.returncode == 2 and "--start" in r.stderr
    r = _cli(env, "--project", "nobody", *common[2:], "--to", f"s3://{s3_bucket}/x")
    assert r.returncode == 1 and "no events" in r.stderr
