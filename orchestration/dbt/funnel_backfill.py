"""Rebuilding ``fct_funnels`` for the days already built, after a funnel is created (``eventpipe funnels``).

Through the Dagster webserver's GraphQL API (the one the UI uses): the days are the partitions of
``fct_funnels`` already materialized, and the rebuild is an asset backfill of ``fct_funnels`` alone —
one dbt run over those days (the marts' single-run backfill policy), queued like any run, so it waits
for the dbt pool instead of racing a scheduled marts run. The run reads the registry as every marts run
does, so the new funnel's rows appear for those days; the others are rebuilt identically.
"""

from __future__ import annotations

from datetime import date, timedelta

from orchestration.backfill import graphql, launch_asset_backfill

FUNNELS_ASSET = ["fct_funnels"]

STATUS_QUERY = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
  ... on AssetNode { assetPartitionStatuses { __typename
    ... on TimePartitionStatuses { ranges { startKey endKey status } } } } } }"""


def built_days(url: str) -> list[str]:
    """Days (partition keys) of fct_funnels materialized so far, in order."""
    node = graphql(url, STATUS_QUERY, {"key": {"path": FUNNELS_ASSET}})["assetNodeOrError"]
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
    return launch_asset_backfill(url, [FUNNELS_ASSET], days, title, {"eventpipe/trigger": "funnels"})
