"""The production-like ClickHouse cluster of docker-compose.yml, checked as text (no Docker and no ClickHouse
server >= 23 installs here): the compose services, deploy/clickhouse/*.xml and the DDL that
orchestration/clickhouse/schema.py emits for CLICKHOUSE_CLUSTER must agree — cluster name, 2 shards x 2
replicas, one {shard}/{replica} macro pair per node, Keeper address — and deploy/dagster.yaml is what
`eventpipe dagster` writes for the compose variables."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from eventpipe_core.settings import load_settings
from orchestration.cli import dagster_yaml
from orchestration.clickhouse.schema import schema_plan

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "clickhouse"


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR:-default} with the given variables (what `CLICKHOUSE_HOST=… docker compose` does)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: variables.get(m.group(1), m.group(2)), value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def cluster_xml() -> ET.Element:
    return ET.parse(DEPLOY / "cluster.xml").getroot()


def node_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items()
            if str(svc.get("image", "")).startswith("clickhouse/clickhouse-server") and "cluster" in svc.get("profiles", [])}


def mounted(svc: dict, target: str) -> Path:
    for volume in svc.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return ROOT / source
    raise AssertionError(f"nothing mounted at {target}: {svc.get('volumes')}")


def test_cluster_topology_matches_compose(compose: dict, cluster_xml: ET.Element) -> None:
    clusters = cluster_xml.find("remote_servers")
    assert clusters is not None and len(clusters) == 1
    cluster = clusters[0]
    shards = [[(r.findtext("host"), r.findtext("port")) for r in shard.findall("replica")] for shard in cluster.findall("shard")]
    assert [len(s) for s in shards] == [2, 2]  # 2 shards x 2 replicas
    assert all(shard.findtext("internal_replication") == "true" for shard in cluster.findall("shard"))  # Replicated tables
    nodes = node_services(compose)
    assert sorted(h for s in shards for h, _ in s) == sorted(nodes)  # every node is a service, every service a node
    assert {p for s in shards for _, p in s} == {"9000"}
    for name, svc in nodes.items():
        assert mounted(svc, "/etc/clickhouse-server/config.d/cluster.xml") == DEPLOY / "cluster.xml", name
    # Keeper: the address every node uses is the keeper service on its configured port
    keeper = ET.parse(DEPLOY / "keeper.xml").getroot().find("keeper_server")
    assert keeper is not None
    node = cluster_xml.find("zookeeper/node")
    assert node is not None and node.findtext("port") == keeper.findtext("tcp_port")
    keeper_svc = compose["services"][node.findtext("host")]
    assert str(keeper_svc["image"]).startswith("clickhouse/clickhouse-keeper")
    assert mounted(keeper_svc, "/etc/clickhouse-keeper/keeper_config.xml") == DEPLOY / "keeper.xml"
    assert cluster_xml.findtext("distributed_ddl/path")  # ON CLUSTER needs the DDL queue


def test_macros_are_what_the_replicated_ddl_needs(compose: dict, cluster_xml: ET.Element) -> None:
    env = compose["x-eventpipe-env"]
    variables = {"CLICKHOUSE_HOST": "ch-s1-r1", "CLICKHOUSE_CLUSTER": cluster_xml.find("remote_servers")[0].tag}
    settings = load_settings(clickhouse_url=interpolate(env["CLICKHOUSE_URL"], variables),
                             clickhouse_cluster=interpolate(env["CLICKHOUSE_CLUSTER"], variables))
    assert settings.clickhouse.host in node_services(compose)
    plan = schema_plan(settings)
    ddl = "\n".join(plan.statements() + plan.staging_statements("x")[1])
    # DDL runs ON CLUSTER <the cluster of cluster.xml>, Distributed tables name the same cluster
    assert f"ON CLUSTER `{variables['CLICKHOUSE_CLUSTER']}`" in ddl
    assert set(re.findall(r"Distributed\('([^']+)'", ddl)) == {variables["CLICKHOUSE_CLUSTER"]}
    needed = set(re.findall(r"\{(\w+)\}", ddl))
    assert needed == {"shard", "replica"}
    shard_of = {r.findtext("host"): i for i, shard in enumerate(cluster_xml.find("remote_servers")[0].findall("shard"))
                for r in shard.findall("replica")}
    seen: dict[str, set[str]] = {}
    pairs = set()
    for name, svc in node_services(compose).items():
        macros = ET.parse(mounted(svc, "/etc/clickhouse-server/config.d/macros.xml")).getroot().find("macros")
        assert macros is not None and {m.tag for m in macros} >= needed, name
        shard, replica = macros.findtext("shard"), macros.findtext("replica")
        seen.setdefault(shard or "", set()).add(name)
        pairs.add((shard, replica))
        assert replica == name  # the replica name is the node's own
    # nodes of one shard in cluster.xml share a {shard} macro (same Keeper path), other shards differ
    assert sorted(map(sorted, seen.values())) == sorted(sorted(h for h, i in shard_of.items() if i == k) for k in range(2))
    assert len(pairs) == 4


def test_compose_dagster_instance_is_the_generated_one(compose: dict) -> None:
    env = compose["x-eventpipe-env"]
    assert env["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://")
    settings = load_settings(dagster_postgres_url=interpolate(env["DAGSTER_POSTGRES_URL"], {}),
                             dagster_max_concurrent_runs=int(env["DAGSTER_MAX_CONCURRENT_RUNS"]))
    assert (ROOT / "deploy" / "dagster.yaml").read_text() == dagster_yaml(settings)
    assert "DAGSTER_PG_HOST" not in (ROOT / "docker-compose.yml").read_text()
