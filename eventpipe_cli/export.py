"""`eventpipe export`: a project's stored events for an hour range -> one object per hour on S3 or a directory.

Same source and rows as ``GET /api/2/export`` (:mod:`eventpipe_core.export`); objects are written one hour
at a time, so memory stays bounded by one hour.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        project: str = typer.Option(..., help="project whose events are exported"),
        start: str = typer.Option(..., help="first hour, YYYYMMDDTHH (UTC, included)"),
        end: str = typer.Option(..., help="last hour, YYYYMMDDTHH (UTC, included)"),
        to: str = typer.Option(..., help="destination: s3://bucket/prefix or file:///abs/dir"),
        fmt: str = typer.Option("jsonl", "--format", help="jsonl (gzipped JSON lines) or parquet (zstd)"),
    ) -> None:
        """Export stored (enriched, deduplicated) events of PROJECT, one object per hour, with a progress bar."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from eventpipe_cli.main import console, err, settings_or_exit
        from eventpipe_core.export import (
            ExportRangeError,
            export_object_key,
            hour_jsonl_gz,
            hour_parquet,
            iter_export_hours,
            parse_range,
        )
        from eventpipe_core.lake_store import open_lake

        settings = settings_or_exit()
        if fmt not in ("jsonl", "parquet"):
            err.print(f"[red]error:[/red] --format must be jsonl or parquet, got {fmt!r}")
            raise typer.Exit(2)
        try:
            hours = parse_range(start, end, settings.export_max_hours)
        except ExportRangeError as exc:
            err.print(f"[red]error:[/red] --{exc.param}: {exc}")
            raise typer.Exit(2) from None
        try:
            dest = open_lake(settings, to.rstrip("/"))
        except ValueError:
            err.print(f"[red]error:[/red] --to must be s3://bucket/prefix or file:///dir, got {to!r}")
            raise typer.Exit(2) from None
        lake = open_lake(settings)
        encode = hour_parquet if fmt == "parquet" else hour_jsonl_gz
        total_rows = objects = 0
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rows]} events"),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, transient=False) as progress:
            task = progress.add_task("export", total=len(hours), rows=0)
            done = 0
            for item in iter_export_hours(lake, project, _ticking(hours, progress, task)):
                data, rows = encode(item)
                dest.put(export_object_key(project, item.hour, fmt), data)
                total_rows += rows
                objects += 1
                progress.update(task, rows=total_rows)
                done += 1
        if not objects:
            err.print(f"[yellow]no events[/yellow] of project {project!r} between {start} and {end}")
            raise typer.Exit(1)
        console.print(f"exported {total_rows} events in {objects} hourly objects to {dest.url}")


def _ticking(hours, progress, task):  # noqa: ANN001, ANN202 - rich types
    """Advance the bar as each hour is read, including hours without events."""
    for hour in hours:
        yield hour
        progress.advance(task)
