"""Revocation without restart (aauth.md §3 hot reload, §7.3 ``trust remove``): removing a
node's entry from the relay's registry stops that node on its very next request, while
the relay, the node and every other node keep running and working."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from darkmesh_aauth.cli import trust

sys.path.insert(0, str(Path(__file__).parent))
from aauth_kit import (
    BASE_REQUEST,
    SKILL,
    Mode,
    build_mesh,
    ingest_demo,
    plan_mesh,
    signed_node_client,
    signed_relay_client,
)

from sdl_core.testing.mesh import InProcessMesh

NODES: dict[str, Mode] = {"node_a": "aauth", "node_b": "aauth", "node_c": "aauth"}


def run_trust(*args: str) -> dict[str, Any]:
    """``darkmesh trust …`` as the relay operator runs it, output parsed."""
    result = CliRunner().invoke(trust, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def listener_error(mesh: InProcessMesh, node_id: str) -> str:
    listener = mesh.nodes[node_id].listener
    assert listener is not None
    return str(listener.status()["last_error"] or "")


@pytest.mark.asyncio
@pytest.mark.usefixtures("darkmesh_clean_env")
async def test_trust_remove_stops_the_node_on_its_next_request(tmp_path: Path) -> None:
    plan = plan_mesh(tmp_path, NODES)
    fast = {n: {"listener_wait_seconds": 0.5} for n in NODES}
    async with build_mesh(plan, response_wait_seconds=2.0, node_extra=fast) as mesh:
        for node_id in NODES:
            await ingest_demo(mesh, plan, node_id)
        assert mesh.relay is not None
        relay_host = mesh.relay
        await mesh.wait_until(
            lambda: _count_nodes(mesh, 3), timeout=10)
        node_c = plan.keys["node_c"].node
        # A pull names the templates its node serves (the relay records them).
        pull_c = {"node_id": "node_c", "capabilities": mesh.nodes["node_c"].templates()}
        async with signed_relay_client(mesh, node_c) as as_c:
            assert (await as_c.post("/darkmesh/relay/posts/pull", json=pull_c)).status_code == 200

            removed = run_trust("remove", "--sub", "darkmesh-node@node_c",
                                "--file", str(plan.relay_trust))
            assert removed["action"] == "remove" and removed["removed"] == [node_c.thumbprint]

            # The very next request of node_c is refused: no restart, no delay.
            for path, body in (("posts/pull", pull_c),
                               ("posts", {"request_id": "rq", "requester_id": "node_c",
                                          "template": "warm_intro_v2",
                                          "target": {"company": "Company X"}}),
                               ("nodes/register", {"node_id": "node_c",
                                                   "url": "http://node_c.mesh"}),
                               ("mailbox/pull", pull_c)):
                refused = await as_c.post(f"/darkmesh/relay/{path}", json=body)
                assert refused.status_code == 401, path
                assert refused.json() == {
                    "detail": "AAuth verification failed: unknown_thumbprint",
                    "reason": "unknown_thumbprint"}
                assert refused.headers["signature-error"] == "error=unknown_key"

        # node_c's own listener hits the same wall on its next pull.
        await mesh.wait_until(
            lambda: _has(listener_error(mesh, "node_c"), "unknown_thumbprint"), timeout=10)

        # Everyone else is unaffected: node_b pulls, node_a still gets its intro via node_b.
        async with signed_relay_client(mesh, plan.keys["node_b"].node) as as_b:
            assert (await as_b.post("/darkmesh/relay/posts/pull",
                                    json={"node_id": "node_b", "capabilities":
                                          mesh.nodes["node_b"].templates()})).status_code == 200
        async with signed_node_client(mesh, "node_a", plan.keys["node_a"].operator,
                                      timeout=30) as a:
            answer = (await a.post(f"{SKILL}/request", json=BASE_REQUEST)).json()
        assert [c["score"] for c in answer["candidates"]] == [0.904], answer
        assert mesh.relay is relay_host and all(h.started for h in mesh.nodes.values())

        # Trusting the key again works as fast, again without a restart.
        added = run_trust("add", "--public-jwk", str(_public_file(tmp_path, node_c.jwk)),
                          "--sub", "darkmesh-node@node_c", "--capabilities",
                          "relay.register,relay.publish,relay.pull,relay.mailbox.send,"
                          "relay.mailbox.read", "--file", str(plan.relay_trust))
        assert added["action"] == "append" and added["thumbprint"] == node_c.thumbprint
        async with signed_relay_client(mesh, node_c) as as_c:
            assert (await as_c.post("/darkmesh/relay/posts/pull", json=pull_c)).status_code == 200


async def _count_nodes(mesh: InProcessMesh, count: int) -> bool:
    assert mesh.relay is not None
    return len(await mesh.relay.backend.list_nodes()) >= count


async def _has(text: Any, needle: str) -> bool:
    return needle in await text


def _public_file(root: Path, jwk: dict[str, Any]) -> Path:
    from darkmesh_aauth.keys import public_jwk

    path = root / "node_c.public.jwk"
    path.write_text(json.dumps(public_jwk(jwk)), encoding="utf-8")
    return path
