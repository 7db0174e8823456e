"""`eventpipe demo` (the whole pipeline on the embedded stack) and `eventpipe generate` (a load tool)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def demo(
    users: int = typer.Option(300, "--users", min=10, help="Signed-up users to simulate."),
    days: int = typer.Option(7, "--days", min=2, max=60, help="Full UTC days of history, ending yesterday."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed and dates give the same events."),
    exit_after: bool = typer.Option(False, "--exit", help="Stop the stack after the report instead of waiting for Ctrl-C."),
    report_json: Path | None = typer.Option(  # noqa: B008 - typer's way of declaring options
        None, "--report-json", help="Also write the report and ground truth as JSON."),
    reset: bool = typer.Option(False, "--reset", help="Delete earlier pipeline state under EVENTPIPE_HOME first."),
    timeout: float = typer.Option(1200, "--timeout", help="Seconds to wait for the pipeline in each phase."),
) -> None:
    """Start the embedded stack, send a synthetic product through it, wait for the pipeline, report."""
    from demo.runner import DemoError, run_demo
    from eventpipe_cli.main import settings_or_exit, setup_logging

    settings_or_exit()
    setup_logging()
    import logging

    logging.getLogger().setLevel(logging.WARNING)  # progress bars, not log lines
    try:
        code = run_demo(users, days, seed, exit_after, report_json, reset, timeout, console)
    except DemoError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, details in the logs
        err.print(f"[red]error:[/red] demo failed: {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def generate(
    rate: float = typer.Option(100.0, "--rate", min=0.1, help="Events per second."),
    duration: float = typer.Option(60.0, "--duration", min=1, help="Seconds to send for."),
    url: str | None = typer.Option(None, "--url", help="Collector base URL (default http://COLLECTOR_HOST:COLLECTOR_PORT)."),
    api_key: str | None = typer.Option(None, "--api-key", help="API key (default: a new key of --project)."),
    project: str = typer.Option("load", "--project", help="Project to create a key for when --api-key is not given."),
    users: int = typer.Option(5000, "--users", min=1, help="Distinct users (and devices) events are spread over."),
    seed: int = typer.Option(1, "--seed"),
) -> None:
    """Send synthetic events at a steady rate to a collector (Batch API); prints achieved rate and latencies."""
    from demo.load import percentile, run_load
    from demo.sender import Sender, SendError
    from eventpipe_cli.main import settings_or_exit

    settings = settings_or_exit()
    if api_key is None:
        from eventpipe_core.metadata import get_metadata_store

        api_key = get_metadata_store(settings).create_key(project)
        console.print(f"created an API key for project {project}")
    base = url or f"http://{settings.collector_host}:{settings.collector_port}"
    console.print(f"sending {rate:g} events/s for {duration:g} s to {base}/batch …")
    try:
        with Sender(base, api_key) as sender:
            result = run_load(sender, rate, duration, users=users, seed=seed)
            retries = sender.stats.retries
    except SendError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    lat = result.request_latencies_s
    console.print(f"sent {result.sent:,} events, accepted {result.accepted:,} in {result.elapsed_s:.1f} s "
                  f"= {result.rate:,.0f} events/s; {retries} retries")
    if lat:
        console.print(f"request latency p50 {percentile(lat, 50) * 1000:.0f} ms · p95 {percentile(lat, 95) * 1000:.0f} ms")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("generate")(generate)
