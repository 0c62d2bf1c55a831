"""``darkmesh demo``: a relay and nodes A, B, C on loopback, one intro end to end.

Steps: start the processes, ingest the demo CSVs through ``/darkmesh/ingest``, ask A
for an intro to Business Development at Company X, consent to the candidate, let B's
operator approve through B's approval route, then read the intro. Every step is
printed with its measured latency. Exit status 0 only when the outcome is the
expected one (one candidate scoring 0.904, C not returned, intro naming Taylor BD).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from darkmesh_warm_intro.cluster import SKILL, LocalCluster, demo_rows, free_port

SELF_IDENTIFIERS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
                    "node_c": "carol@elsewhere.com"}
BASE_TARGET = {"company": "Company X", "role": "Business Development"}
EXPECTED_SCORE = 0.904
REVEAL_TIMEOUT_SECONDS = 15.0


class DemoFailed(RuntimeError):
    """The demo ran but the outcome was not the expected one."""


def _step(echo: Callable[[str], None], label: str, started: float, detail: str = "") -> None:
    elapsed = (time.perf_counter() - started) * 1000
    echo(f"  {label:<42} {elapsed:8.1f} ms  {detail}")


def start_demo_cluster(protocol: str, echo: Callable[[str], None]) -> LocalCluster:
    """Relay + A, B, C with the demo data ingested and registered."""
    cluster = LocalCluster()
    try:
        started = time.perf_counter()
        cluster.start_relay()
        _step(echo, "relay started", started, cluster.relay_url)
        template = "warm_intro_v1" if protocol == "v1" else "warm_intro_v2"
        ports = {node_id: free_port() for node_id in SELF_IDENTIFIERS}
        started = time.perf_counter()
        for node_id, port in ports.items():
            # v1 answers and reveals go node to node: each lists the others as peers.
            peers = [{"node_id": other, "url": f"http://127.0.0.1:{p}", "auth": "hmac"}
                     for other, p in ports.items() if other != node_id]
            cluster.start_node(
                node_id, self_identifiers=[SELF_IDENTIFIERS[node_id]], peers=peers, port=port,
                wait=False,
                warm_intro={"default_template": template, "response_wait_seconds": 5.0,
                            "v1_require_approval": protocol == "v1"},
            )
        for node_id in ports:
            cluster.wait_healthy(node_id)
        _step(echo, "nodes A, B, C started", started,
              " ".join(n.url for n in cluster.nodes.values()))
        for node_id in cluster.nodes:
            started = time.perf_counter()
            contacts = cluster.ingest(node_id, "contacts", demo_rows(f"{node_id}_contacts.csv"))
            interactions = cluster.ingest(node_id, "interactions",
                                          demo_rows(f"{node_id}_interactions.csv"))
            _step(echo, f"{node_id} ingested", started,
                  f"{contacts} contacts, {interactions} interactions")
        started = time.perf_counter()
        cluster.wait_registered(3)
        _step(echo, "all nodes registered at the relay", started)
        return cluster
    except BaseException:
        cluster.close()
        raise


def run_intro(cluster: LocalCluster, protocol: str, echo: Callable[[str], None]) -> dict[str, Any]:
    """Discovery -> consent -> B's approval -> intro; returns the intro."""
    template = "warm_intro_v1" if protocol == "v1" else "warm_intro_v2"
    with cluster.client("node_a") as a, cluster.client("node_b") as b:
        started = time.perf_counter()
        response = a.post(f"{SKILL}/request", json={
            "template": template, "target": BASE_TARGET,
            "constraints": {"max_candidates": 3, "min_strength": 0.5}})
        answer = _json(response, "request")
        candidates = answer["candidates"]
        _step(echo, "discovery (A asks, B and C answer)", started,
              f"{len(candidates)} candidate(s): "
              + ", ".join(f"{c['pseudonym_id']} score {c['score']}" for c in candidates))
        if len(candidates) != 1 or candidates[0]["score"] != EXPECTED_SCORE:
            raise DemoFailed(f"expected one candidate scoring {EXPECTED_SCORE}, got {candidates}")
        consent = {"request_id": answer["request_id"], "consent_id": candidates[0]["consent_id"]}
        started = time.perf_counter()
        result = _json(a.post(f"{SKILL}/consent", json=consent), "consent", allow=(502,))
        state = result.get("state") or ("revealed" if result.get("approved") else "pending")
        _step(echo, "A's operator consents", started, f"state: {state}")
        started = time.perf_counter()
        approval = _wait_approval(b, template)
        decision = _json(b.post(f"{SKILL}/approvals/{approval}/approve"), "approve")
        _step(echo, "B's operator approves", started, f"approval {approval}: "
              f"{decision.get('state', decision)}")
        started = time.perf_counter()
        intro = _wait_intro(a, consent)
        contact = intro["target_contact"]
        _step(echo, "A receives the intro", started,
              f"{contact['name']} ({contact['role']}, {contact['org']}) via "
              f"{intro['connector']['node_id']}, strength {intro['relationship_strength']}")
        if contact["name"] != "Taylor BD":
            raise DemoFailed(f"expected an intro to Taylor BD, got {contact}")
        return intro


def _json(response: Any, what: str, allow: tuple[int, ...] = ()) -> dict[str, Any]:
    if response.status_code >= 400 and response.status_code not in allow:
        raise DemoFailed(f"{what} failed: HTTP {response.status_code} {response.text}")
    data = response.json()
    return data if isinstance(data, dict) else {}


def _wait_approval(b: Any, template: str) -> str:
    deadline = time.monotonic() + REVEAL_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        approvals = _json(b.get(f"{SKILL}/approvals"), "approvals")["approvals"]
        for approval in approvals:
            if approval.get("template", template) == template:
                return str(approval["approval_id"])
        time.sleep(0.05)
    raise DemoFailed("B never saw the reveal to approve")


def _wait_intro(a: Any, consent: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + REVEAL_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        result = _json(a.post(f"{SKILL}/consent", json=consent), "consent", allow=(502,))
        if result.get("approved") and result.get("intro"):
            return dict(result["intro"])
        if result.get("state") == "declined":
            raise DemoFailed(f"the reveal was declined: {result}")
        time.sleep(0.05)
    raise DemoFailed("the intro did not arrive in time")


def run_demo(protocol: str, echo: Callable[[str], None]) -> dict[str, Any]:
    """The whole demo; raises :class:`DemoFailed` on an unexpected outcome."""
    echo(f"darkmesh demo: relay + nodes A, B, C on 127.0.0.1, protocol {protocol}")
    total = time.perf_counter()
    cluster = start_demo_cluster(protocol, echo)
    try:
        intro = run_intro(cluster, protocol, echo)
    finally:
        cluster.close()
        echo("  processes stopped, temporary files removed")
    _step(echo, "demo complete", total)
    return intro
