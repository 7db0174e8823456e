"""Settings: defaults, overrides, and one clear one-line error per malformed value."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpipe_core.settings import SettingsError, get_settings, load_settings

ENV_VARS = [
    "EVENTPIPE_HOME", "KAFKA_BOOTSTRAP_SERVERS", "LAKE_URL", "CLICKHOUSE_URL", "METADATA_DB_URL",
    "DAGSTER_HOME", "AWS_ENDPOINT_URL", "BROKER_STORAGE_URL", "KAFKA_EVENTS_PARTITIONS",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_defaults_describe_the_embedded_stack(clean_env: Path) -> None:
    s = load_settings()
    home = clean_env / ".eventpipe"
    assert s.eventpipe_home == home
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.lake_url == (home / "lake").as_uri()
    assert s.clickhouse_url == "http://default:@127.0.0.1:8123/analytics"
    assert s.metadata_db_url == f"sqlite:///{home / 'metadata.db'}"
    assert s.dagster_home == home / "dagster"
    assert s.kafka_events_topic == "events" and s.kafka_dlq_topic == "events.dlq"
    ch = s.clickhouse
    assert (ch.host, ch.port, ch.user, ch.database) == ("127.0.0.1", 8123, "default", "analytics")
    # the embedded server's writer password is generated once, kept private, and the same for every reader of settings
    creds = home / "chserver-credentials"
    assert len(ch.password) >= 24 and creds.exists() and (creds.stat().st_mode & 0o777) == 0o600
    assert load_settings().clickhouse.password == ch.password
    service = s.clickhouse_service_target
    assert service is not None and service.user == "query_service" and service.password not in ("", ch.password)


def test_no_generated_password_for_remote_or_explicit_urls(clean_env: Path) -> None:
    assert load_settings(clickhouse_url="https://u:p@ch.example.com/prod").clickhouse.password == "p"
    assert load_settings(clickhouse_url="http://default:@ch.example.com:8123/a").clickhouse.password == ""
    assert load_settings(clickhouse_url="http://default:x@127.0.0.1:8123/a").clickhouse.password == "x"
    off = load_settings(chserver_generate_password=False)
    assert off.clickhouse.password == ""
    assert not (clean_env / ".eventpipe" / "chserver-credentials").exists()


def test_environment_overrides(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTPIPE_HOME", str(clean_env / "h"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092, kafka-2:9093")
    monkeypatch.setenv("LAKE_URL", "s3://bucket/prefix/")
    monkeypatch.setenv("CLICKHOUSE_URL", "https://u:p%40ss@ch.example.com/prod")
    monkeypatch.setenv("METADATA_DB_URL", "postgresql://pg/test")
    monkeypatch.setenv("KAFKA_EVENTS_PARTITIONS", "12")
    s = get_settings()
    assert s.bootstrap_servers == ["kafka-1:9092", "kafka-2:9093"]
    assert s.lake_url == "s3://bucket/prefix"
    assert s.metadata_db_url == "postgresql://pg/test"
    assert s.dagster_home == clean_env / "h" / "dagster"
    assert s.kafka_events_partitions == 12
    ch = s.clickhouse
    assert (ch.host, ch.port, ch.user, ch.password, ch.database, ch.secure) == (
        "ch.example.com", 8443, "u", "p@ss", "prod", True)


def test_explicit_overrides_win(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:1")
    assert load_settings(kafka_bootstrap_servers="b:2").kafka_bootstrap_servers == "b:2"


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "KAFKA_BOOTSTRAP_SERVERS"),
        ("KAFKA_BOOTSTRAP_SERVERS", "host:99999", "is not host:port"),
        ("KAFKA_BOOTSTRAP_SERVERS", " , ", "at least one"),
        ("CLICKHOUSE_URL", "tcp://127.0.0.1:9000", "CLICKHOUSE_URL must look like"),
        ("CLICKHOUSE_URL", "http://host:notaport/db", "bad port"),
        ("LAKE_URL", "gs://bucket", "LAKE_URL must start with"),
        ("LAKE_URL", "s3:///nobucket", "needs a bucket"),
        ("METADATA_DB_URL", "mysql://x/y", "METADATA_DB_URL must be"),
        ("AWS_ENDPOINT_URL", "localhost:9000", "AWS_ENDPOINT_URL must be"),
        ("BROKER_STORAGE_URL", "file:///tmp", "BROKER_STORAGE_URL must be"),
        ("KAFKA_EVENTS_PARTITIONS", "zero", "KAFKA_EVENTS_PARTITIONS"),
        ("KAFKA_EVENTS_PARTITIONS", "0", "greater than or equal to 1"),
    ],
)
def test_malformed_values_give_one_clear_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert var in message
    assert fragment in message


def test_cli_reports_bad_config_and_exits_2(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from eventpipe_cli.main import app

    monkeypatch.setenv("CLICKHOUSE_URL", "nonsense")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "CLICKHOUSE_URL" in result.output
