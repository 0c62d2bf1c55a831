"""Warm intro v2 across two relay processes that share one Redis (darkmesh-redis).

Node A talks only to relay 1; nodes B and C only to relay 2. The full v2 intro
(discovery, consent, approval, reveal) works across them. Then relay 1 is killed and A
is pointed at relay 2: the flow carries on and nothing is lost, because everything the
relays hold is in Redis. Redis itself is killed (-9) and restarted mid-flow with its
append-only file on: no acknowledged post or message is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdl_core.testing.polling import until

pytest.importorskip("darkmesh_warm_intro", reason="needs darkmesh-warm-intro (tox env all)")
pytest.importorskip("darkmesh_redis", reason="needs darkmesh-redis (tox env all)")

from darkmesh_redis.testing import RedisServer, make_settings, settings_env
from darkmesh_warm_intro.cluster import SKILL, LocalCluster, demo_rows

from sdl_core.testing.relay_process import RelayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
            "node_c": "carol@elsewhere.com"}
BASE = {"target": {"company": "Company X", "role": "Business Development"},
        "constraints": {"max_candidates": 3, "min_strength": 0.5}}
TAYLOR = {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
          "role": "Business Development"}


class TwoRelayMesh:
    """A redis-server, two relay processes on it and a LocalCluster of nodes."""

    def __init__(self, root: Path) -> None:
        self.redis = RedisServer(root / "redis", appendonly=True)
        self.cluster = LocalCluster()
        env = settings_env(make_settings(self.redis.url, socket_timeout_seconds=2.0))
        self.relays = [
            RelayProcess(backend="redis", data_dir=root / f"relay{n}", key=self.cluster.relay_key,
                         plugins=("darkmesh-redis",), env=env)
            for n in (1, 2)
        ]

    def start(self) -> None:
        self.redis.start()
        for relay in self.relays:
            relay.start()
        for node_id, me in SELF_IDS.items():
            # LocalCluster writes the relay URL in force into each node's config.
            self.cluster.relay_url = self.relays[0 if node_id == "node_a" else 1].url
            self.cluster.start_node(node_id, self_identifiers=[me], wait=False,
                                    warm_intro={"response_wait_seconds": 8.0})
        for node_id in SELF_IDS:
            self.cluster.wait_healthy(node_id)
            self.cluster.ingest(node_id, "contacts", demo_rows(f"{node_id}_contacts.csv"))
            self.cluster.ingest(node_id, "interactions",
                                demo_rows(f"{node_id}_interactions.csv"))
        self.cluster.wait_registered(3)

    def move_node(self, node_id: str, relay_url: str) -> None:
        """Point ``node_id`` at another relay and restart it (its state is durable)."""
        node = self.cluster.nodes[node_id]
        text = node.config.read_text(encoding="utf-8")
        current = next(r.url for r in self.relays if f'"{r.url}"' in text)
        node.config.write_text(text.replace(f'"{current}"', f'"{relay_url}"'),
                               encoding="utf-8")
        self.cluster.restart_node(node_id)

    def close(self) -> None:
        self.cluster.close()
        for relay in self.relays:
            relay.stop()
        self.redis.kill()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[TwoRelayMesh]:
    mesh = TwoRelayMesh(tmp_path)
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.close()


def post(mesh: TwoRelayMesh, node_id: str, path: str, body: Any = None) -> httpx.Response:
    with mesh.cluster.client(node_id) as http:
        return http.post(SKILL + path, json=body)


def get(mesh: TwoRelayMesh, node_id: str, path: str) -> httpx.Response:
    with mesh.cluster.client(node_id) as http:
        return http.get(SKILL + path)




def approval_of(mesh: TwoRelayMesh, request_id: str) -> str | None:
    for item in get(mesh, "node_b", "/approvals").json()["approvals"]:
        if item["request_id"] == request_id:
            return str(item["approval_id"])
    return None


def test_v2_intro_across_two_relays_survives_losing_relay_1_and_a_redis_crash(
    mesh: TwoRelayMesh,
) -> None:
    # Discovery: A's post goes through relay 1, B and C answer through relay 2.
    response = post(mesh, "node_a", "/request", BASE)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["live_nodes"] == 2 and answer["answered"] == 2
    assert [c["score"] for c in answer["candidates"]] == [0.904]
    consent = {"request_id": answer["request_id"],
               "consent_id": answer["candidates"][0]["consent_id"]}
    assert post(mesh, "node_a", "/consent", consent).json()["state"] == "pending"
    approval_id = until(lambda: approval_of(mesh, answer["request_id"]))

    # Redis dies hard and comes back from its append-only file.
    epoch = httpx.get(f"{mesh.relays[1].url}/darkmesh/relay/health").json()["epoch"]
    mesh.redis.kill()
    mesh.redis.start()
    assert httpx.get(f"{mesh.relays[1].url}/darkmesh/relay/health",
                     timeout=10).json()["epoch"] == epoch

    # Relay 1 dies; B approves while A is cut off, so the reveal waits in A's mailbox.
    first = mesh.relays[0]
    assert first.process is not None
    first.process.kill()
    first.process.wait(10)
    decided = post(mesh, "node_b", f"/approvals/{approval_id}/approve").json()
    assert decided["state"] == "approved"

    # A moves to relay 2 and picks the intro up from there.
    mesh.move_node("node_a", mesh.relays[1].url)

    def revealed() -> dict[str, Any] | None:
        result = post(mesh, "node_a", "/consent", consent).json()
        return result if result.get("state") == "revealed" else None

    result = until(revealed, timeout=45)
    assert result["approved"] is True
    assert result["intro"]["target_contact"] == TAYLOR
    assert result["intro"]["connector"]["node_id"] == "node_b"

    # And A keeps working through relay 2 alone: a second intro from scratch.
    again = post(mesh, "node_a", "/request", BASE)
    assert again.status_code == 200, again.text
    assert [c["score"] for c in again.json()["candidates"]] == [0.904]
