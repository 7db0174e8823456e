"""Waiting for the pipeline to finish on its own (sensors, automation), with progress bars.

Only public interfaces are read: the lake's commit log (what `eventpipe lake files` shows),
``analytics.events`` over HTTP, and Dagster's GraphQL API. "Done" means: every unique accepted
event is in ClickHouse, every event hour is materialized, every day's marts were materialized
after the last load of any of its hours, and no run or backfill is queued or running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from demo.dagster_api import ACTIVE_RUN_STATUSES, DagsterAPI
from eventpipe_core.lake_catalog import iter_commit_records
from eventpipe_core.lake_store import open_lake
from eventpipe_core.settings import Settings

HOURLY_ASSET = ("clickhouse_events",)


class PipelineTimeout(RuntimeError):
    """The pipeline did not finish in time; the message says what was missing."""


class PipelineFailed(RuntimeError):
    """A Dagster run failed."""


@dataclass
class Target:
    """What 'done' means for one wait."""

    landed_rows: int
    unique_events: int
    days: list[date]
    project: str
    dead_lettered: int = 0

    @property
    def hours(self) -> list[str]:
        return [f"{d.isoformat()}-{h:02d}:00" for d in self.days for h in range(24)]

    @property
    def day_keys(self) -> list[str]:
        return [d.isoformat() for d in self.days]


@dataclass
class Status:
    landed: int = 0
    dead_lettered: int = 0
    in_clickhouse: int = 0
    hours_done: int = 0
    days_fresh: int = 0
    active_runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    stale_days: list[str] = field(default_factory=list)

    def done(self, t: Target) -> bool:
        return (self.landed >= t.landed_rows and self.in_clickhouse == t.unique_events
                and self.dead_lettered >= t.dead_lettered
                and self.hours_done == len(t.hours) and self.days_fresh == len(t.days) and self.active_runs == 0)


class Waiter:
    """Polls the lake, ClickHouse and Dagster until a :class:`Target` is reached."""

    def __init__(self, settings: Settings, dagster: DagsterAPI, console: Console | None = None) -> None:
        import clickhouse_connect

        self.settings = settings
        self.dagster = dagster
        self.console = console or Console()
        ch = settings.clickhouse
        self.ch = clickhouse_connect.get_client(host=ch.host, port=ch.port, username=ch.user, password=ch.password,
                                                secure=ch.secure, autogenerate_session_id=False)
        self.lake = open_lake(settings)
        self.known_failures: set[str] = {r.run_id for r in dagster.runs(("FAILURE",))}
        self._marts: list[tuple[str, ...]] = []

    def marts(self) -> list[tuple[str, ...]]:
        if not self._marts:
            self._marts = self.dagster.asset_keys("marts")
        return self._marts

    def poll(self, t: Target) -> Status:
        s = Status()
        for record in iter_commit_records(self.lake):
            s.landed += record.rows
            s.dead_lettered += record.dead_lettered
        try:
            s.in_clickhouse = int(self.ch.command(
                f"SELECT count() FROM {self.settings.clickhouse.database}.events WHERE project = {{p:String}}",
                parameters={"p": t.project}))
        except Exception:  # noqa: BLE001 - the table appears with the first load
            s.in_clickhouse = 0
        loads = self.dagster.latest_materializations(HOURLY_ASSET, t.hours)
        s.hours_done = sum(1 for h in t.hours if h in loads)
        marts = [self.dagster.latest_materializations(k, t.day_keys) for k in self.marts()]
        for day in t.day_keys:
            last_load = max((loads.get(f"{day}-{h:02d}:00", 0.0) for h in range(24)), default=0.0)
            if marts and all(m.get(day, 0.0) > last_load > 0 for m in marts):
                s.days_fresh += 1
            else:
                s.stale_days.append(day)
        s.active_runs = len(self.dagster.runs(ACTIVE_RUN_STATUSES)) + self.dagster.active_backfills()
        s.failed_runs = [r.run_id for r in self.dagster.runs(("FAILURE",)) if r.run_id not in self.known_failures]
        return s

    def wait(self, t: Target, timeout_s: float, title: str = "pipeline") -> Status:
        """Block until ``t`` is reached (twice in a row, so a run about to be requested is not missed).
        ``self.visible_at`` is set to the monotonic time all events were first visible in ClickHouse."""
        deadline = time.monotonic() + timeout_s
        self.visible_at: float | None = None
        columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            bars = {
                "landed": progress.add_task("landed in the lake (rows)", total=t.landed_rows),
                "ch": progress.add_task("in analytics.events (events)", total=t.unique_events),
                "hours": progress.add_task("event hours loaded (Dagster)", total=len(t.hours)),
                "days": progress.add_task("days of marts built (dbt)", total=len(t.days)),
            }
            confirmed = 0
            while True:
                s = self.poll(t)
                progress.update(bars["landed"], completed=min(s.landed, t.landed_rows))
                progress.update(bars["ch"], completed=s.in_clickhouse)
                if self.visible_at is None and s.in_clickhouse == t.unique_events:
                    self.visible_at = time.monotonic()
                progress.update(bars["hours"], completed=s.hours_done)
                progress.update(bars["days"], completed=s.days_fresh,
                                description=f"days of marts built (dbt) · {s.active_runs} active run(s)"[:34])
                if s.failed_runs:
                    raise PipelineFailed(f"Dagster run(s) failed: {', '.join(s.failed_runs)} — see the Dagster UI")
                confirmed = confirmed + 1 if s.done(t) else 0
                if confirmed >= 2:
                    return s
                if time.monotonic() > deadline:
                    raise PipelineTimeout(
                        f"{title} not done after {timeout_s:.0f}s: landed {s.landed}/{t.landed_rows}, "
                        f"in ClickHouse {s.in_clickhouse}/{t.unique_events}, hours {s.hours_done}/{len(t.hours)}, "
                        f"stale days {s.stale_days}, active runs {s.active_runs}")
                time.sleep(2.0)
