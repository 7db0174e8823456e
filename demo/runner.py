"""`eventpipe demo`: the whole pipeline on the embedded stack, checked against ground truth.

Phases: start the stack (as `eventpipe up`) → create an API key → send the synthetic product over
HTTP, malformed requests and poison Kafka records → wait for the pipeline's own sensors and
automation → send late events for an earlier day → wait again → report, compare with the ground
truth, optionally write both as JSON → keep the stack up until Ctrl-C (or stop with ``--exit``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from demo.generator import Dataset, DemoConfig, generate
from demo.report import figures, mismatches, render
from demo.truth import expected_figures
from eventpipe_core.settings import Settings, get_settings, load_settings


class DemoError(RuntimeError):
    """A user-facing failure of the demo (one line)."""


def state_paths(settings: Settings) -> list[Path]:
    """Local state a demo run creates; only paths inside EVENTPIPE_HOME are ever removed."""
    home = settings.eventpipe_home
    paths = [home / "dbt", Path(settings.chserver_data_dir or home / "clickhouse"), Path(settings.dagster_home or "")]
    if (settings.lake_url or "").startswith("file://"):
        paths.append(Path(urlsplit(settings.lake_url or "").path))
    if (settings.metadata_db_url or "").startswith("sqlite:///"):
        paths.append(Path((settings.metadata_db_url or "")[len("sqlite:///"):]))
    return [p for p in paths if p != Path("") and p.resolve().is_relative_to(home.resolve())]


def prepare_home(settings: Settings, reset: bool, console: Console) -> None:
    existing = [p for p in state_paths(settings) if p.exists() and (p.is_file() or any(p.iterdir()))]
    if existing and not reset:
        raise DemoError(f"{settings.eventpipe_home} already holds pipeline state ({', '.join(p.name for p in existing)}); "
                        "run with --reset to start from scratch, or set EVENTPIPE_HOME to an empty directory")
    for p in existing:
        console.print(f"  removing {p}")
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def demo_environment(settings: Settings, config: DemoConfig) -> dict[str, str]:
    """Settings of the demo's stack: partitions start at the first generated day (a small asset graph)
    and shorter landing/sensor intervals, so the demo finishes in minutes."""
    return {
        "DAGSTER_PARTITIONS_START": config.first_day.isoformat(),
        "CONSUMER_FLUSH_AGE_S": str(min(settings.consumer_flush_age_s, 5.0)),
        "LANDING_SENSOR_INTERVAL_SECONDS": str(min(settings.landing_sensor_interval_seconds, 10)),
        # demo-sized hour ranges are enriched in-process; the Spark path is for large backfills
        "SPARK_BACKFILL_MIN_HOURS": str(24 * (config.days + 1)),
    }


def run_demo(users: int, days: int, seed: int, exit_after: bool, report_json: Path | None, reset: bool,
             timeout_s: float, console: Console) -> int:
    """The demo; returns the process exit status (0 = every figure equals the ground truth)."""
    from embedded.stack import Stack

    settings = get_settings()
    console.print(f"[bold]eventpipe demo[/bold] — {users} users over {days} days, state in {settings.eventpipe_home}")
    prepare_home(settings, reset, console)
    today = datetime.now(UTC).date()
    config = DemoConfig(users=users, days=days, seed=seed, last_day=today - timedelta(days=1),
                        bot_max_events_per_minute=settings.bot_max_events_per_minute)
    os.environ.update(demo_environment(settings, config))  # inherited by the stack's child processes
    get_settings.cache_clear()
    settings = load_settings()
    t0 = time.monotonic()
    stack = Stack(settings)
    console.print("[bold]1/5[/bold] starting the embedded stack …")
    try:
        stack.start(echo=console.print)
        timings: dict[str, float] = {"stack_start_s": time.monotonic() - t0}
        result = _pipeline(settings, config, console, timings, timeout_s)
        timings["total_s"] = time.monotonic() - t0
        report, expected = result
        diff = mismatches(report, expected)
        if report_json is not None:
            report_json.parent.mkdir(parents=True, exist_ok=True)
            report_json.write_text(json.dumps({
                "config": {**asdict(config), "last_day": config.last_day.isoformat(), "first_day": config.first_day.isoformat()},
                "report": report, "expected": expected, "mismatches": diff, "timings": timings,
            }, indent=2, sort_keys=True))
            console.print(f"report written to {report_json}")
        console.print(f"demo finished in {timings['total_s']:.0f} s (stack start {timings['stack_start_s']:.0f} s)")
        if not exit_after:
            _show_endpoints(settings, console)
            stack.wait(echo=console.print)
        return 1 if diff else 0
    except KeyboardInterrupt:
        return 130
    finally:
        if stack.started:
            console.print("stopping the stack …")
            stack.stop(echo=lambda _m: None)


def _pipeline(settings: Settings, config: DemoConfig, console: Console, timings: dict[str, float],
              timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    from demo.dagster_api import DagsterAPI
    from demo.sender import Sender, produce_poison, rejected_from_metrics
    from demo.waiter import Target, Waiter
    from eventpipe_core.metadata import get_metadata_store
    from eventpipe_core.metadata.secrets import create_key_with_secret

    key, secret = create_key_with_secret(get_metadata_store(settings), config.project)
    dataset = generate(config)
    collector_url = f"http://{settings.collector_host}:{settings.collector_port}"
    dagster = DagsterAPI(f"http://127.0.0.1:{settings.dagster_port}")
    waiter = Waiter(settings, dagster, console)
    _describe(dataset, console)

    console.print(f"[bold]2/5[/bold] sending to the collector ({collector_url}/batch, API key of project {config.project}) …")
    with Sender(collector_url, key) as sender:
        _send_with_progress(sender, dataset.events + dataset.resends, "events (incl. duplicate sends)", console)
        refused = sender.send_malformed(dataset.malformed)
        console.print(f"  {refused[0]} malformed requests answered 400 ({refused[1]} events)")
        produce_poison(settings, dataset.poison)
        console.print(f"  {len(dataset.poison)} poison records produced straight to topic {settings.kafka_events_topic}")
        sent_at = time.monotonic()

        console.print("[bold]3/5[/bold] waiting for the pipeline (landing sensor → hourly runs → automation → dbt) …")
        main = dataset.events + dataset.resends
        target = Target(landed_rows=len(main), unique_events=len({e["insert_id"] for e in main}), days=config.day_list,
                        project=config.project, dead_lettered=len(dataset.poison))
        waiter.wait(target, timeout_s, "main upload")
        timings["visible_s"] = (waiter.visible_at or time.monotonic()) - sent_at
        timings["marts_s"] = time.monotonic() - sent_at

        console.print(f"[bold]4/5[/bold] {len(dataset.late)} late events for {config.late_day} arrive now …")
        _send_with_progress(sender, dataset.late, "late events", console)
        late_at = time.monotonic()
        target = Target(landed_rows=len(dataset.sent), unique_events=len(dataset.unique_events), days=config.day_list,
                        project=config.project, dead_lettered=len(dataset.poison))
        status = waiter.wait(target, timeout_s, "late events")
        timings["late_s"] = time.monotonic() - late_at

        metrics = sender.collector_metrics()
    accepted = int(sum(v for k, v in metrics.items() if k.startswith("eventpipe_collector_events_accepted_total")))
    console.print("[bold]5/5[/bold] report (read back from ClickHouse with the read-only user)")
    report = figures(settings, config.project, accepted=accepted, rejected=rejected_from_metrics(metrics),
                     dead_lettered=status.dead_lettered)
    expected = expected_figures(
        dataset.sent, bot_devices=dataset.bot_devices, max_per_minute=config.bot_max_events_per_minute,
        today=datetime.now(UTC).date(), rejected_requests=len(dataset.malformed),
        rejected_events=sum(m.events for m in dataset.malformed), dead_lettered=len(dataset.poison))
    render(console, report, expected, timings)
    _show_query_api(settings, config, key, secret, console)
    dagster.close()
    return report, expected


def _show_query_api(settings: Settings, config: DemoConfig, key: str, secret: str, console: Console) -> None:
    base = f"http://{settings.query_api_host}:{settings.query_api_port}"
    start, end = config.first_day.strftime("%Y%m%d"), config.last_day.strftime("%Y%m%d")
    console.print(
        f"  Query API    {base}/api/2/  (docs {base}/docs) — project {config.project}, key {key}, secret {secret}\n"
        f"               curl -u {key}:{secret} '{base}/api/2/events/segmentation?e=%7B%22event_type%22:%22_active%22%7D"
        f"&start={start}&end={end}'"
    )


def _describe(d: Dataset, console: Console) -> None:
    c = d.config
    users = {e["user_id"] for e in d.events if "user_id" in e}
    devices = {e["device_id"] for e in d.events}
    console.print(f"  generated {len(d.events):,} events {c.first_day} … {c.last_day}: {len(users)} users, "
                  f"{len(devices)} devices "
                  f"({len(d.bot_devices)} crawlers + 1 scripted), {len(d.resends)} duplicate sends, {len(d.late)} late events, "
                  f"{len(d.malformed)} malformed requests, {len(d.poison)} poison records")


def _send_with_progress(sender: Any, events: list[dict[str, Any]], label: str, console: Console) -> None:
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"sent: {label}"[:34], total=len(events))
        sender.send(events, on_batch=lambda n: progress.advance(task, n))


def _show_endpoints(settings: Settings, console: Console) -> None:
    ch = settings.clickhouse
    console.print(
        "\n[bold]The stack stays up[/bold] — press Ctrl-C to stop.\n"
        f"  Dagster UI   http://127.0.0.1:{settings.dagster_port}  (runs, asset partitions, checks)\n"
        f"  ClickHouse   {ch.http_url}  database {ch.database}, read-only user "
        f"{settings.clickhouse_readonly_user}/{settings.clickhouse_readonly_password}\n"
        f"               curl -u {settings.clickhouse_readonly_user}:{settings.clickhouse_readonly_password} "
        f"'{ch.http_url}/?query=SELECT+*+FROM+{ch.database}.fct_active_users+FORMAT+PrettyCompact'\n"
        f"  Collector    http://{settings.collector_host}:{settings.collector_port}/2/httpapi  "
        "(API keys: `eventpipe keys create --project NAME`)"
    )
