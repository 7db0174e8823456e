"""Asset backfills launched through the Dagster webserver's GraphQL API (what the UI's Materialize → partitions does).

An *asset* backfill follows the assets' backfill policies — hourly assets in runs of
``BACKFILL_MAX_PARTITIONS_PER_RUN`` hours, the dbt marts in one run per range — and every run uses
the code location's in-process executor. ``dagster job backfill`` is not that: it makes a
partition-set backfill of one run per partition (one process per hour). ``eventpipe backfill`` and
``eventpipe funnels`` use this module.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

HOURLY_ASSETS = (["enriched_events"], ["clickhouse_events"])
HOURLY_FMT = "%Y-%m-%d-%H:%M"  # == orchestration.partitions.HOURLY_FMT (not imported: keeps the CLI free of dagster)

LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { __typename
  ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on UnauthorizedError { message }
  ... on PartitionSetNotFoundError { message } ... on InvalidSubsetError { message } } }"""


class DagsterUnavailable(RuntimeError):
    """The Dagster webserver did not answer (the stack is not running)."""


def graphql(url: str, query: str, variables: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        raise DagsterUnavailable(f"Dagster is not reachable at {url} ({exc})") from None
    if body.get("errors"):
        raise RuntimeError(f"Dagster GraphQL error: {body['errors'][0].get('message')}")
    return body["data"]


def launch_asset_backfill(url: str, assets: list[list[str]], partitions: list[str], title: str,
                          tags: dict[str, str] | None = None) -> str:
    """One asset backfill of ``assets`` over ``partitions``; returns the backfill id."""
    params = {"assetSelection": [{"path": a} for a in assets], "partitionNames": partitions, "fromFailure": False,
              "title": title[:100], "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    result = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result.get("__typename") != "LaunchBackfillSuccess":
        raise RuntimeError(f"Dagster refused the backfill: {result.get('message') or result.get('__typename')}")
    return str(result["backfillId"])


def hour_keys(start: str, end: str) -> list[str]:
    """Hour partition keys from ``start`` to ``end`` inclusive (``YYYY-MM-DD-HH:MM`` or a date = its first/last hour)."""
    def parse(text: str, last: bool) -> datetime:
        try:
            return datetime.strptime(text, HOURLY_FMT).replace(tzinfo=UTC)
        except ValueError:
            pass
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"{text!r} is neither an hour (2026-01-07-23:00) nor a day (2026-01-07)") from None
        return day + timedelta(hours=23) if last else day

    t0, t1 = parse(start, False), parse(end, True)
    if t1 < t0:
        raise ValueError(f"--to {end} is before --from {start}")
    out = []
    while t0 <= t1:
        out.append(t0.strftime(HOURLY_FMT))
        t0 += timedelta(hours=1)
    return out
