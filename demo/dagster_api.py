"""The few Dagster GraphQL queries the demo needs (the same API the Dagster UI uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

ACTIVE_RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")

_RUNS = """query Runs($statuses: [RunStatus!]) {
  runsOrError(filter: {statuses: $statuses}) {
    __typename
    ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}"""

_BACKFILLS = """{ partitionBackfillsOrError(status: REQUESTED) {
  __typename ... on PartitionBackfills { results { id status } } ... on PythonError { message } } }"""

_ASSET_NODES = """{ assetNodes { assetKey { path } groupName isPartitioned } }"""

_LATEST = """query Latest($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { latestMaterializationByPartition(partitions: $partitions) { partition timestamp } }
  }
}"""


class DagsterError(RuntimeError):
    """The Dagster API answered with an error."""


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    job: str
    tags: dict[str, str]


class DagsterAPI:
    """Read-only client of a Dagster webserver's GraphQL endpoint."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + "/graphql"
        self.client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.client.post(self.url, json={"query": query, "variables": variables or {}})
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise DagsterError(str(body["errors"])[:500])
        return body["data"]

    def runs(self, statuses: tuple[str, ...]) -> list[Run]:
        data = self.query(_RUNS, {"statuses": list(statuses)})["runsOrError"]
        if data["__typename"] != "Runs":
            raise DagsterError(data.get("message", data["__typename"]))
        return [Run(r["runId"], r["status"], r["jobName"], {t["key"]: t["value"] for t in r["tags"]})
                for r in data["results"]]

    def active_backfills(self) -> int:
        data = self.query(_BACKFILLS)["partitionBackfillsOrError"]
        return len(data.get("results", []))

    def asset_keys(self, group: str) -> list[tuple[str, ...]]:
        nodes = self.query(_ASSET_NODES)["assetNodes"]
        return sorted(tuple(n["assetKey"]["path"]) for n in nodes if n["groupName"] == group and n["isPartitioned"])

    def latest_materializations(self, key: tuple[str, ...], partitions: list[str]) -> dict[str, float]:
        """partition -> timestamp (s) of its latest materialization (materialized partitions only)."""
        data = self.query(_LATEST, {"key": {"path": list(key)}, "partitions": partitions})["assetNodeOrError"]
        if data["__typename"] != "AssetNode":
            raise DagsterError(f"no asset {'/'.join(key)}: {data['__typename']}")
        return {m["partition"]: float(m["timestamp"]) / 1000 for m in data["latestMaterializationByPartition"] if m}
