"""`eventpipe consumer`, `eventpipe lake files|cleanup`, `eventpipe dlq replay|stats`."""

from __future__ import annotations

import logging
import signal
from typing import Annotated, Any

import typer

log = logging.getLogger(__name__)

lake_app = typer.Typer(help="The landed lake: what readers may read.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic events.dlq.", no_args_is_help=True)


def _settings(**overrides: Any):  # noqa: ANN202 - Settings
    from eventpipe_cli.main import settings_or_exit

    settings = settings_or_exit()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=overrides) if overrides else settings


def consumer(
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off; default CONSUMER_METRICS_PORT).")] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for the metrics endpoint.")] = "127.0.0.1",
    flush_records: Annotated[int | None, typer.Option(help="Records per partition batch.")] = None,
    flush_bytes: Annotated[int | None, typer.Option(help="Raw bytes per partition batch.")] = None,
    flush_age: Annotated[float | None, typer.Option(help="Maximum batch age in seconds.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Land Kafka topic `events` on the lake exactly once (one process = one member of the group)."""
    from eventpipe_cli.main import setup_logging
    from ingest_consumer.consumer import LandingConsumer
    from ingest_consumer.metrics import LandingMetrics

    settings = _settings(consumer_metrics_port=metrics_port, consumer_flush_records=flush_records,
                         consumer_flush_bytes=flush_bytes, consumer_flush_age_s=flush_age)
    setup_logging(verbose)
    metrics = LandingMetrics()
    if settings.consumer_metrics_port:
        metrics.serve(settings.consumer_metrics_port, metrics_host)
    landing = LandingConsumer(settings, metrics=metrics)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: flushing, committing and leaving the group", signum)
        landing.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("landing %s -> %s as %s (flush %d records / %d bytes / %.0fs)", settings.kafka_events_topic, settings.lake_url,
             landing.writer_id, settings.consumer_flush_records, settings.consumer_flush_bytes, settings.consumer_flush_age_s)
    landing.run()


@lake_app.command("files")
def lake_files(
    date: Annotated[str | None, typer.Option(help="Event date YYYY-MM-DD (UTC).")] = None,
    hour: Annotated[str | None, typer.Option(help="Event hour HH (UTC).")] = None,
) -> None:
    """List the committed landed objects, one full URI per line."""
    from eventpipe_core.lake_catalog import committed_objects
    from eventpipe_core.lake_store import open_lake

    if hour is not None and not (hour.isdigit() and 0 <= int(hour) < 24):
        raise typer.BadParameter("--hour must be 00..23")
    lake = open_lake(_settings())
    for obj in committed_objects(lake, date, f"{int(hour):02d}" if hour is not None else None):
        typer.echo(lake.uri(obj.key))


@lake_app.command("cleanup")
def lake_cleanup(
    grace_s: Annotated[float | None, typer.Option(help="Only objects older than this (default CONSUMER_ORPHAN_GRACE_S).")] = None,
) -> None:
    """Delete landed-looking objects that no commit record names (leftovers of crashed attempts)."""
    from eventpipe_core.lake_store import open_lake
    from ingest_consumer.cleanup import delete_orphans

    settings = _settings()
    result = delete_orphans(open_lake(settings), settings.consumer_orphan_grace_s if grace_s is None else grace_s)
    typer.echo(f"scanned {result.scanned} objects, deleted {result.orphans_deleted} uncommitted objects "
               f"and {result.temp_files_deleted} temp files")


@dlq_app.command("replay")
def dlq_replay(
    reason_contains: Annotated[str | None, typer.Option(help="Only dead letters whose reason contains this.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; re-submit nothing.")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Ignore earlier replays' progress.")] = False,
) -> None:
    """Re-submit dead letters (original bytes, deduped by source coordinates) to the events topic."""
    from ingest_consumer.dlq import replay

    summary = replay(_settings(), reason_contains=reason_contains, dry_run=dry_run, from_beginning=from_beginning)
    _print_summary(summary)
    if dry_run:
        typer.echo(f"would re-submit {summary.selected} dead letters")
    else:
        typer.echo(f"re-submitted {summary.replayed} dead letters")


@dlq_app.command("stats")
def dlq_stats() -> None:
    """Count dead letters by reason (deduped by source coordinates)."""
    from ingest_consumer.dlq import dlq_summary

    _print_summary(dlq_summary(_settings()))


def _print_summary(summary: Any) -> None:
    typer.echo(f"{summary.records} DLQ records, {summary.unique} distinct source records, {summary.unparsable} without headers")
    for reason, n in summary.by_reason.most_common():
        typer.echo(f"  {n:8d}  {reason}")


def register(app: typer.Typer) -> None:
    app.command("consumer")(consumer)
    app.add_typer(lake_app, name="lake")
    app.add_typer(dlq_app, name="dlq")
