"""Warm intro v2 through real processes on 127.0.0.1: a relay and nodes A, B, C from the
demo data, every outcome of ``spec/demo-data/README.md`` over HTTP, and restarts of
either node between the steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from darkmesh_warm_intro.cluster import SKILL, LocalCluster

from sdl_core.testing.polling import until

pytestmark = pytest.mark.e2e

SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
            "node_c": "carol@elsewhere.com"}
BASE = {"target": {"company": "Company X", "role": "Business Development"},
        "constraints": {"max_candidates": 3, "min_strength": 0.5}}
TAYLOR = {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
          "role": "Business Development"}


#: The requester's collection window; a discovery back far sooner was not waited out.
WINDOW = 20.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        yield cluster.start_demo(SELF_IDS, warm_intro={"response_wait_seconds": WINDOW})


def post(cluster: LocalCluster, node_id: str, path: str, body: Any = None) -> httpx.Response:
    with cluster.client(node_id) as http:
        return http.post(SKILL + path, json=body)


def get(cluster: LocalCluster, node_id: str, path: str) -> httpx.Response:
    with cluster.client(node_id) as http:
        return http.get(SKILL + path)




def test_discovery_returns_early_with_one_candidate(cluster: LocalCluster) -> None:
    started = time.perf_counter()
    response = post(cluster, "node_a", "/request", BASE)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["live_nodes"] == 2 and answer["answered"] == 2  # B and C, C not returned
    assert [c["score"] for c in answer["candidates"]] == [0.904]
    assert answer["candidates"][0]["requires_consent"] is True
    assert "node_b" not in response.text and "@" not in response.text
    assert elapsed < WINDOW / 2  # it returned when all had answered, not at the deadline


def test_thresholds_matching_and_empty_target(cluster: LocalCluster) -> None:
    high = post(cluster, "node_a", "/request", {**BASE, "constraints": {"min_strength": 0.95}})
    assert high.json()["candidates"] == []
    for constraints in ({"max_candidates": 11}, {"min_strength": 1.5}):
        assert post(cluster, "node_a", "/request",
                    {**BASE, "constraints": constraints}).status_code == 422
    loose = post(cluster, "node_a", "/request",
                 {"target": {"company": "company x", "role": "business"}})
    assert [c["score"] for c in loose.json()["candidates"]] == [0.904]
    none = post(cluster, "node_a", "/request", {"target": {"company": "Company Z"}})
    assert none.json()["candidates"] == []
    for target in ({}, {"company": None, "role": ""}):
        response = post(cluster, "node_a", "/request", {"target": target})
        assert response.status_code == 400 and "company or a role" in response.json()["detail"]


def test_consent_approval_and_restarts(cluster: LocalCluster) -> None:
    answer = post(cluster, "node_a", "/request", BASE).json()
    consent = {"request_id": answer["request_id"],
               "consent_id": answer["candidates"][0]["consent_id"]}
    cluster.restart_node("node_a")  # between discovery and consent
    pending = post(cluster, "node_a", "/consent", consent).json()
    assert pending["state"] == "pending" and pending["intro"] is None

    def approval() -> str | None:
        for item in get(cluster, "node_b", "/approvals").json()["approvals"]:
            if item["request_id"] == answer["request_id"]:
                return str(item["approval_id"])
        return None

    approval_id = until(approval)
    cluster.restart_node("node_b")  # between consent and approval
    decided = post(cluster, "node_b", f"/approvals/{approval_id}/approve").json()
    assert decided["state"] == "approved"
    cluster.restart_node("node_a")  # while the intro is on its way

    def revealed() -> dict[str, Any] | None:
        result = post(cluster, "node_a", "/consent", consent).json()
        return result if result.get("state") == "revealed" else None

    result = until(revealed, timeout=30)
    assert result["approved"] is True
    assert result["intro"]["target_contact"] == TAYLOR
    assert result["intro"]["connector"]["node_id"] == "node_b"
    assert result["intro"]["relationship_strength"] == 0.88
    assert post(cluster, "node_a", "/consent", consent).json() == result
    sides = {e["side"] for e in get(cluster, "node_a", "/reveals").json()["reveals"]
             if e.get("request_id") == answer["request_id"]}
    assert sides == {"requester"}
    assert any(e.get("request_id") == answer["request_id"]
               for e in get(cluster, "node_b", "/reveals").json()["reveals"])


def test_decline_is_final(cluster: LocalCluster) -> None:
    answer = post(cluster, "node_a", "/request", BASE).json()
    consent = {"request_id": answer["request_id"],
               "consent_id": answer["candidates"][0]["consent_id"]}
    post(cluster, "node_a", "/consent", consent)
    approval_id = until(lambda: next(
        (a["approval_id"] for a in get(cluster, "node_b", "/approvals").json()["approvals"]
         if a["request_id"] == answer["request_id"]), None))
    assert post(cluster, "node_b", f"/approvals/{approval_id}/decline").json()["state"] == \
        "declined"
    result = until(lambda: (r := post(cluster, "node_a", "/consent", consent).json())
                   .get("state") == "declined" and r)
    assert result["approved"] is False and result["intro"] is None
