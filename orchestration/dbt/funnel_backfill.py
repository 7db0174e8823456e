"""Rebuilding ``fct_funnels`` for the days already built, after a funnel is created (``eventpipe funnels``).

Through the Dagster webserver's GraphQL API (the one the UI uses): the days are the partitions of
``fct_funnels`` already materialized, and the rebuild is an asset backfill of ``fct_funnels`` alone —
one dbt run over those days (the marts' single-run backfill policy), queued like any run, so it waits
for the dbt pool instead of racing a scheduled marts run. The run reads the registry as every marts run
does, so the new funnel's rows appear for those days; the others are rebuilt identically.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import date, timedelta
from typing import Any

FUNNELS_ASSET = ["fct_funnels"]

STATUS_QUERY = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
  ... on AssetNode { assetPartitionStatuses { __typename
    ... on TimePartitionStatuses { ranges { startKey endKey status } } } } } }"""

LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { __typename
  ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on UnauthorizedError { message }
  ... on PartitionSetNotFoundError { message } ... on InvalidSubsetError { message } } }"""


class DagsterUnavailable(RuntimeError):
    """The Dagster webserver did not answer (the stack is not running)."""


def _graphql(url: str, query: str, variables: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
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


def built_days(url: str) -> list[str]:
    """Days (partition keys) of fct_funnels materialized so far, in order."""
    node = _graphql(url, STATUS_QUERY, {"key": {"path": FUNNELS_ASSET}})["assetNodeOrError"]
    if node.get("__typename") != "AssetNode":
        raise RuntimeError("Dagster has no asset fct_funnels (is the dbt code location loaded?)")
    ranges = [r for r in (node["assetPartitionStatuses"].get("ranges") or []) if r["status"] == "MATERIALIZED"]
    out: set[str] = set()
    for r in ranges:  # daily partitions: keys are ISO dates
        day, end = date.fromisoformat(r["startKey"]), date.fromisoformat(r["endKey"])
        while day <= end:
            out.add(day.isoformat())
            day += timedelta(days=1)
    return sorted(out)


def launch_funnels_backfill(url: str, days: list[str], title: str) -> str:
    """An asset backfill of fct_funnels over ``days``; returns the backfill id."""
    params = {"assetSelection": [{"path": FUNNELS_ASSET}], "partitionNames": days, "fromFailure": False,
              "title": title[:100], "tags": [{"key": "eventpipe/trigger", "value": "funnels"}]}
    result = _graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result.get("__typename") != "LaunchBackfillSuccess":
        raise RuntimeError(f"Dagster refused the backfill: {result.get('message') or result.get('__typename')}")
    return str(result["backfillId"])
