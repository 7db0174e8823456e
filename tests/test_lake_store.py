"""The lake store on a local directory and on the S3 protocol (moto server): the lake's code path."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import load_settings
from tests.conftest import AWS_TEST_KEYS


@pytest.fixture(params=["file", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> LakeStore:
    if request.param == "file":
        return open_lake(load_settings(lake_url=(tmp_path / "lake").as_uri()))
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    url = f"s3://{bucket}/t-{tmp_path.name}"
    return open_lake(load_settings(lake_url=url, aws_endpoint_url=endpoint, **AWS_TEST_KEYS))


def test_write_list_read_back(lake: LakeStore) -> None:
    lake.put("raw/events/event_date=2026-01-01/event_hour=00/a.parquet", b"one")
    lake.put("raw/events/event_date=2026-01-01/event_hour=01/b.parquet", b"two")
    lake.put("other/c", b"three")
    keys = sorted(lake.list("raw/events/"))
    assert keys == [
        "raw/events/event_date=2026-01-01/event_hour=00/a.parquet",
        "raw/events/event_date=2026-01-01/event_hour=01/b.parquet",
    ]
    assert lake.get(keys[1]) == b"two"
    assert lake.exists("other/c") and not lake.exists("other/missing")
    with pytest.raises(KeyError):
        lake.get("other/missing")
    lake.put("other/c", b"replaced")
    assert lake.get("other/c") == b"replaced"
    lake.delete("other/c")
    assert not lake.exists("other/c")
    assert lake.uri(keys[0]).startswith(("file:///", "s3://"))
    assert lake.uri(keys[0]).endswith(keys[0])


def test_conditional_create_has_one_winner(lake: LakeStore) -> None:
    assert lake.put_if_absent("commits/p0/00000001.json", b"first") is True
    assert lake.put_if_absent("commits/p0/00000001.json", b"second") is False
    assert lake.get("commits/p0/00000001.json") == b"first"
