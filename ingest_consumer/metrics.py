"""Prometheus metrics of one landing consumer process (own registry: several may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class LandingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter("eventpipe_landing_records_consumed", "Kafka records taken into batches", registry=r)
        self.rows_landed = Counter("eventpipe_landing_rows_landed", "rows in committed landed objects", registry=r)
        self.dead_lettered = Counter("eventpipe_landing_dead_lettered", "records committed as dead letters",
                                     ["reason"], registry=r)
        self.batches_committed = Counter("eventpipe_landing_batches_committed", "commit records won", registry=r)
        self.commit_conflicts = Counter("eventpipe_landing_commit_conflicts",
                                        "attempts that lost their seq to another writer (zombie / double owner)", registry=r)
        self.lake_retries = Counter("eventpipe_landing_lake_retries", "retried lake or DLQ operations", ["op"], registry=r)
        self.batches_discarded = Counter("eventpipe_landing_batches_discarded", "in-flight batches dropped on revoke",
                                         registry=r)
        self.bytes_landed = Counter("eventpipe_landing_bytes_landed", "Parquet bytes written and committed", registry=r)
        self.lag = Gauge("eventpipe_landing_lag", "high watermark minus next offset to land", ["partition"], registry=r)
        self.open_batches = Gauge("eventpipe_landing_open_batches", "partitions with buffered records", registry=r)
        self.assigned = Gauge("eventpipe_landing_assigned_partitions", "partitions this member lands", registry=r)
        self.last_commit = Gauge("eventpipe_landing_last_commit_timestamp_seconds", "time of the last won commit",
                                 registry=r)
        self.ready = Gauge("eventpipe_landing_ready", "1 once the consumer loop runs", registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
