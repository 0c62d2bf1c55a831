"""``darkmesh intro …`` against real node processes on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from darkmesh_warm_intro.cli import intro_group
from darkmesh_warm_intro.cluster import LocalCluster, demo_rows

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        cluster.start_relay()
        for node_id, me in (("node_a", "founder@startup.com"), ("node_b", "casey@connector.com")):
            cluster.start_node(node_id, self_identifiers=[me], wait=False)
        for node_id in ("node_a", "node_b"):
            cluster.wait_healthy(node_id)
            cluster.ingest(node_id, "contacts", demo_rows(f"{node_id}_contacts.csv"))
            cluster.ingest(node_id, "interactions", demo_rows(f"{node_id}_interactions.csv"))
        cluster.wait_registered(2)
        yield cluster


def run(cluster: LocalCluster, node_id: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(intro_group, ["--url", cluster.nodes[node_id].url,
                                              "--node-key", cluster.node_key, *args])
    return result.exit_code, result.output


def test_request_consent_approve_status(cluster: LocalCluster) -> None:
    code, out = run(cluster, "node_a", "request", "--company", "Company X", "--role",
                    "Business Development", "--json")
    assert code == 0, out
    answer = json.loads(out)
    (candidate,) = answer["candidates"]
    assert candidate["score"] == 0.904
    code, out = run(cluster, "node_a", "consent", answer["request_id"], candidate["consent_id"])
    assert code == 0 and "pending" in out
    deadline = time.monotonic() + 10
    approval_line = ""
    while time.monotonic() < deadline and not approval_line:
        code, out = run(cluster, "node_b", "pending")
        approval_line = next((line for line in out.splitlines() if "v2-" in line), "")
        time.sleep(0.05)
    assert "reveals Taylor BD" in approval_line
    approval_id = approval_line.split()[0]
    code, out = run(cluster, "node_b", "approve", approval_id)
    assert code == 0 and out.strip() == f"{approval_id}: approved"
    code, out = run(cluster, "node_b", "decline", approval_id)
    assert code == 2 and "HTTP 409" in out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, out = run(cluster, "node_a", "status", answer["request_id"])
        if "revealed" in out:
            break
        time.sleep(0.05)
    assert "intro for" in out and "Taylor BD <taylor@companyx.com>" in out


def test_errors_name_the_problem(cluster: LocalCluster) -> None:
    code, out = run(cluster, "node_a", "request")
    assert code == 2 and "--company or --role" in out
    code, out = run(cluster, "node_a", "request", "--company", "X", "--max-candidates", "11")
    assert code == 2 and "--max-candidates" in out
    code, out = run(cluster, "node_a", "status", "nope")
    assert code == 2 and "HTTP 404" in out
    result = CliRunner().invoke(intro_group, ["--url", cluster.nodes["node_a"].url,
                                              "--node-key", "wrong", "pending"])
    assert result.exit_code == 2 and "HTTP 401: invalid node key" in result.output
    result = CliRunner().invoke(intro_group, ["--url", "http://127.0.0.1:9", "--node-key", "k",
                                              "pending"])
    assert result.exit_code == 2 and "cannot reach the node" in result.output
