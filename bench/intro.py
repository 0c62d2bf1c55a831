"""End-to-end latency of a v2 request (operator POST /request -> candidates) through real
processes on 127.0.0.1: a relay and nodes started by ``darkmesh relay|node serve``.

Scenarios (targets from the issue):
  demo3     3 nodes, demo data                         p50 < 300 ms
  big3      3 nodes, A has 2,000 contacts              p50 < 1.5 s
  mesh20    20 nodes, 200 contacts each                p50 < 1.5 s

Prints JSON with medians, p90, answered/live counts and machine info.
Usage: python bench/intro.py [--runs N] [--scenario demo3|big3|mesh20|all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from darkmesh_warm_intro.cluster import SKILL, LocalCluster, demo_rows

TARGET = {"company": "Company X", "role": "Business Development"}
WARM_INTRO = {"response_wait_seconds": 5.0, "budget_requests": 100_000,
              "max_contacts": 5000}
SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
            "node_c": "carol@elsewhere.com"}


def synthetic_contacts(
    prefix: str, count: int, extra: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = [{"name": f"{prefix} {i}", "email": f"{prefix}{i}@{prefix}.example",
             "org": f"Org {i % 50}", "role": "Engineer", "strength": 0.5 + (i % 40) / 100}
            for i in range(count - len(extra))]
    return [*extra, *rows]


def start(cluster: LocalCluster, nodes: dict[str, tuple[str, list[dict[str, Any]],
                                                        list[dict[str, Any]]]]) -> None:
    cluster.start_relay()
    for node_id, (me, _, _) in nodes.items():
        cluster.start_node(node_id, self_identifiers=[me], warm_intro=WARM_INTRO, wait=False)
    for node_id, (_, contacts, interactions) in nodes.items():
        cluster.wait_healthy(node_id)
        cluster.ingest(node_id, "contacts", contacts)
        if interactions:
            cluster.ingest(node_id, "interactions", interactions)
    cluster.wait_registered(len(nodes))


def demo_nodes(a_contacts: int = 0) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node_id, me in SELF_IDS.items():
        contacts = demo_rows(f"{node_id}_contacts.csv")
        if node_id == "node_a" and a_contacts:
            contacts = synthetic_contacts("a", a_contacts, contacts)
        nodes[node_id] = (me, contacts, demo_rows(f"{node_id}_interactions.csv"))
    return nodes


def mesh_nodes(count: int, per_node: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    ids = [f"node_{i:02d}" for i in range(count)]
    for index, node_id in enumerate(ids):
        me = f"{node_id}@mesh.example"
        # a ring: each node knows the next one's operator, and one contact at Company X
        friend = {"name": "Friend", "email": f"{ids[(index + 1) % count]}@mesh.example",
                  "org": "Mesh", "role": "Peer", "strength": 0.9}
        target = {"name": f"BD {index}", "email": f"bd{index}@companyx.com",
                  "org": "Company X", "role": "Business Development", "strength": 0.8}
        nodes[node_id] = (me, synthetic_contacts(node_id, per_node, [friend, target]), [])
    return nodes


def measure(cluster: LocalCluster, requester: str, runs: int) -> dict[str, Any]:
    samples: list[float] = []
    last: dict[str, Any] = {}
    with cluster.client(requester, timeout=60) as http:
        http.post(f"{SKILL}/request", json={"target": TARGET})  # warm-up
        for _ in range(runs):
            started = time.perf_counter()
            response = http.post(f"{SKILL}/request", json={"target": TARGET})
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            last = response.json()
    samples.sort()
    return {"runs": runs, "p50_ms": round(statistics.median(samples), 1),
            "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 1),
            "min_ms": round(samples[0], 1), "answered": last.get("answered"),
            "live_nodes": last.get("live_nodes"), "candidates": len(last.get("candidates", []))}


def _demo3() -> dict[str, Any]:
    return demo_nodes()


def _big3() -> dict[str, Any]:
    return demo_nodes(a_contacts=2000)


def _mesh20() -> dict[str, Any]:
    return mesh_nodes(20, 200)


SCENARIOS: dict[str, tuple[Callable[[], dict[str, Any]], str, int]] = {
    "demo3": (_demo3, "node_a", 300),
    "big3": (_big3, "node_a", 1500),
    "mesh20": (_mesh20, "node_00", 1500),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    results: dict[str, Any] = {}
    for name in names:
        build, requester, target_ms = SCENARIOS[name]
        with LocalCluster() as cluster:
            start(cluster, build())
            result = measure(cluster, requester, args.runs)
        result["target_p50_ms"] = target_ms
        result["meets_target"] = result["p50_ms"] < target_ms
        results[name] = result
    print(json.dumps({"scenarios": results, "machine": {
        "python": platform.python_version(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
    }}, indent=2))


if __name__ == "__main__":
    main()
