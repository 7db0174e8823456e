"""`eventpipe alerts …`: create, list, show (with history), snooze, delete — the same rules and checks as
``/api/alerts`` (``query_service.alerts_api``), straight on the metadata store. Exit 2 on a bad argument or an
unknown alert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

alerts_app = typer.Typer(help="Alerts on saved charts' series (evaluated by the Dagster alerts_sensor).",
                         no_args_is_help=True)


def _store():  # noqa: ANN202
    from eventpipe_cli.main import settings_or_exit
    from eventpipe_core.metadata import get_metadata_store

    return get_metadata_store(settings_or_exit())


def _fail(message: str) -> typer.Exit:
    from eventpipe_cli.main import err

    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def _line(a: dict[str, Any]) -> str:
    until = f" until {a['snoozed_until']}" if a["snoozed_until"] else ""
    return (f"{a['id']}  {a['status']:8}{until}  {a['interval']:4}  {a['condition']} {a['threshold']:g}  "
            f"{a['name']}  chart={a['series'].get('chart_id', '-')}")


@alerts_app.command("create")
def create(
    project: str = typer.Option(..., help="project"),
    name: str = typer.Option(..., help="alert name"),
    condition: str = typer.Option(..., help="above | below | change | anomaly"),
    webhook: str = typer.Option(..., help="webhook URL (JSON POST, signed X-Eventpipe-Signature)"),
    threshold: float | None = typer.Option(None, help="threshold (change: relative, 0.2 = 20 %; unused by anomaly)"),
    chart: int | None = typer.Option(None, help="saved chart id (its series 0 unless --series-index)"),
    series: str | None = typer.Option(None, help="series spec: JSON or a JSON file {kind, params, series, day}"),
    series_index: int | None = typer.Option(None, help="which series of the chart"),
    day: int | None = typer.Option(None, help="retention charts: day N"),
) -> None:
    """Create an alert; prints its webhook secret (shown once) and, on the last line, its id."""
    from eventpipe_cli.main import console
    from eventpipe_core.alerting import CONDITIONS
    from eventpipe_core.metadata import ChartStore, MetadataError
    from eventpipe_core.metadata.alerts import create_alert
    from query_service import alert_series
    from query_service.alerts_api import parse_threshold, resolve_series
    from query_service.params import ParamError

    if condition not in CONDITIONS:
        raise _fail(f"--condition must be one of {', '.join(CONDITIONS)}")
    body: dict[str, Any] = {"chart_id": chart}
    try:
        if series is not None:
            text = Path(series).read_text() if not series.lstrip().startswith("{") else series
            body["series"] = json.loads(text)
        extra = {k: v for k, v in (("series", series_index), ("day", day)) if v is not None}
        if extra:
            body["series"] = {**(body.get("series") or {}), **extra}
        store = _store()
        spec = resolve_series(ChartStore(store.engine), project, body)
        value = parse_threshold(threshold, condition)
        aid, secret = create_alert(store, project, name, series=spec, condition=condition, threshold=value,
                                   interval=alert_series.interval(spec), webhook_url=webhook)
    except ParamError as exc:
        raise _fail(f"{exc.param}: {exc.message}") from None
    except (MetadataError, json.JSONDecodeError, OSError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"created alert {name!r} ({alert_series.interval(spec)} intervals); webhook secret: {secret}",
                  highlight=False)
    console.print(aid, highlight=False)


@alerts_app.command("list")
def listing(project: str = typer.Option(..., help="project"),
            as_json: bool = typer.Option(False, "--json", help="one JSON object per line")) -> None:
    """The project's alerts: id, status (firing / resolved / snoozed), interval, rule, name, chart."""
    from eventpipe_cli.main import console
    from eventpipe_core.metadata.alerts import list_alerts

    for a in list_alerts(_store(), project):
        if as_json:
            typer.echo(json.dumps(a))
        else:
            console.print(_line(a), highlight=False, soft_wrap=True)


@alerts_app.command("show")
def show(alert_id: str, project: str = typer.Option(..., help="project")) -> None:
    """One alert and its transition history (firing / resolved / revised), as JSON."""
    from eventpipe_core.metadata.alerts import alert_history, get_alert

    store = _store()
    a = get_alert(store, project, alert_id)
    if a is None:
        raise _fail(f"no alert {alert_id!r} in project {project!r}")
    typer.echo(json.dumps({**a, "history": alert_history(store, alert_id)}, indent=2))


@alerts_app.command("snooze")
def snooze(alert_id: str, project: str = typer.Option(..., help="project"),
           minutes: float | None = typer.Option(None, help="snooze for N minutes"),
           until: str | None = typer.Option(None, help="snooze until an ISO-8601 time"),
           off: bool = typer.Option(False, "--off", help="end the snooze")) -> None:
    """Snooze (transitions are recorded, not delivered) or unsnooze."""
    from eventpipe_cli.main import console
    from eventpipe_core.metadata.alerts import snooze_alert
    from query_service.alerts_api import parse_until
    from query_service.params import ParamError

    if sum(x is not None and x is not False for x in (minutes, until, off or None)) != 1:
        raise _fail("give exactly one of --minutes, --until and --off")
    try:
        when = None if off else parse_until({"minutes": minutes} if minutes is not None else {"until": until})
    except ParamError as exc:
        raise _fail(f"--{exc.param}: {exc.message}") from None
    a = snooze_alert(_store(), project, alert_id, when)
    if a is None:
        raise _fail(f"no alert {alert_id!r} in project {project!r}")
    console.print(_line(a), highlight=False, soft_wrap=True)


@alerts_app.command("delete")
def delete(alert_id: str, project: str = typer.Option(..., help="project")) -> None:
    """Delete an alert and its history."""
    from eventpipe_cli.main import console
    from eventpipe_core.metadata.alerts import delete_alert

    if not delete_alert(_store(), project, alert_id):
        raise _fail(f"no alert {alert_id!r} in project {project!r}")
    console.print(f"deleted {alert_id}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
