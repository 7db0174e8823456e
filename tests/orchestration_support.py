"""Test helpers for the orchestration tests: raw rows and landed batches in the lake_catalog format."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrichment.lake_io import hour_parts
from eventpipe_core.event_model import RAW_EVENT_SCHEMA, hour_partition
from eventpipe_core.lake_catalog import RAW_PREFIX, CommitRecord, LandedObject, hour_dir, hour_key
from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import Settings, load_settings
from orchestration.assemble import build_definitions
from tests.chserver_support import ChServer

CHROME_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
GOOGLEBOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
LONDON_IP = "81.2.69.160"


def raw_row(insert_id: str, t: datetime, *, offset: int = 0, **fields: Any) -> dict[str, Any]:
    """One landed row (RAW_EVENT_SCHEMA) with sensible defaults."""
    row: dict[str, Any] = dict.fromkeys(RAW_EVENT_SCHEMA.names)
    row.update(
        insert_id=insert_id, event_type="page_view", event_time=t, project="demo", received_at=t,
        device_id="device-aaaa", kafka_partition=0, kafka_offset=offset, user_agent=CHROME_UA,
    )
    row.update(fields)
    return row


def write_geoip_db(path: Path) -> Path:
    """A tiny MaxMind City database built with mmdb-writer: 81.2.69.0/24 = London."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-City")
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {"country": {"names": {"en": "United Kingdom"}}, "subdivisions": [{"names": {"en": "England"}}],
         "city": {"names": {"en": "London"}}, "location": {"metro_code": 826}},
    )
    writer.to_db_file(str(path))
    return path


def land_batch(lake: LakeStore, rows: list[dict[str, Any]], *, kafka_partition: int, seq: int, start_offset: int,
               committed_at: datetime | None = None, force_hour: datetime | None = None) -> CommitRecord:
    """Write rows as the landing consumer does: one Parquet object per event hour, then the commit record.

    ``force_hour`` files every row under that hour (a corrupt landing, for the data-quality tests).
    """
    by_hour: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        row = {**row, "kafka_partition": kafka_partition, "kafka_offset": start_offset + i}
        by_hour.setdefault(hour_partition(force_hour or row["event_time"]), []).append(row)
    objects = []
    for (date, hour), hour_rows in sorted(by_hour.items()):
        key = f"{hour_dir(RAW_PREFIX, date, hour)}p{kafka_partition:05d}-{start_offset:012d}.parquet"
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(hour_rows, schema=RAW_EVENT_SCHEMA), sink, compression="zstd")
        lake.put(key, sink.getvalue())
        times = [int(r["event_time"].timestamp() * 1000) for r in hour_rows]
        objects.append(LandedObject(key, date, hour, len(hour_rows), min(times), max(times)))
    record = CommitRecord(
        topic="events", kafka_partition=kafka_partition, seq=seq, start_offset=start_offset,
        end_offset=start_offset + len(rows), objects=tuple(objects),
        committed_at_ms=int((committed_at or datetime.now(UTC)).timestamp() * 1000), writer_id="test", records=len(rows),
    )
    assert lake.put_if_absent(record.key, record.to_json())
    return record


NOW_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Env:
    settings: Settings
    defs: dg.Definitions
    lake: LakeStore
    client: object
    instance: dg.DagsterInstance

    def run_hour(self, hour: datetime, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("hourly_events_job")
        return job.execute_in_process(partition_key=pkey(hour), instance=self.instance, raise_on_error=raise_on_error)

    def rows(self, sql: str) -> list[tuple]:
        return self.client.query(sql).result_rows  # type: ignore[attr-defined]

    def hour_count(self, hour: datetime) -> int:
        db = self.settings.clickhouse.database
        return self.rows(f"SELECT count() FROM {db}.events WHERE event_hour = toDateTime({int(hour.timestamp())}, 'UTC')")[0][0]


def pkey(hour: datetime) -> str:
    return hour_key(*hour_parts(hour))


@pytest.fixture(name="orch")
def orch_fixture(tmp_path: Path, chserver: ChServer, request: pytest.FixtureRequest) -> Iterator[Env]:
    """A temp lake, a fresh database on the session chserver, an ephemeral Dagster instance
    (``@pytest.mark.orch_settings(name=value)`` overrides settings)."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    marker = request.node.get_closest_marker("orch_settings")
    settings = load_settings(**(marker.kwargs if marker else {}),
        eventpipe_home=tmp_path, lake_url=(tmp_path / "lake").as_uri(),
        clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{database}",
        geoip_db_path=write_geoip_db(tmp_path / "city.mmdb"), bot_max_events_per_minute=5,
    )
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password)
    with dg.DagsterInstance.ephemeral() as instance:
        yield Env(settings, build_definitions(settings, include_dbt=False), open_lake(settings), client, instance)
    client.command(f"DROP DATABASE IF EXISTS {database}")
