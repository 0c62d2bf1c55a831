"""``darkmesh intro keys`` and ``darkmesh intro keys accept NODE_ID`` against a served
node (Hypercorn on 127.0.0.1, in this process), through ``GET /keys`` and
``POST /keys/{node_id}/accept``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from darkmesh_warm_intro import plugin
from darkmesh_warm_intro.cli import intro_group
from darkmesh_warm_intro.sealing import KEY_STATE
from darkmesh_warm_intro.testing import LoopbackMesh, add_demo_node

from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY, make_host
from sdl_core.testing.served import served_app

from .test_v2_flow import ask


async def key_change_history(root: Path) -> dict[str, str]:
    """a asks (b pins a's key), a gets a new key and asks again (b records the change).
    Returns the fingerprints involved."""
    mesh = LoopbackMesh(root)
    a, b = await add_demo_node(mesh, "a"), await add_demo_node(mesh, "b")
    await ask(a)
    old = a.skill.v2.core.keys.fingerprint
    a.host.state("warm_intro").delete(KEY_STATE)
    a.skill.v2.core._keys = None
    assert (await ask(a))["refused"] == 1
    prints = {"old": old, "new": a.skill.v2.core.keys.fingerprint,
              "b": b.skill.v2.core.keys.fingerprint}
    await mesh.close()
    return prints


@pytest.fixture(scope="module")
def served_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("cli-keys")
    prints = asyncio.run(key_change_history(root))
    # node_b again, from the same node database: its pins and the recorded change.
    host = make_host(plugin, node_id="node_b", data_dir=str(root / "node_b"), store="memory")
    with served_app(create_node_app(host), health_path="/darkmesh/health") as url:
        yield url, prints


def run(url: str, *args: str, key: str = TEST_NODE_KEY) -> tuple[int, str]:
    result = CliRunner().invoke(intro_group, ["--url", url, "--node-key", key, *args])
    return result.exit_code, result.output


def test_list_accept_and_list_again(served_b: tuple[str, dict[str, str]]) -> None:
    url, prints = served_b
    code, out = run(url, "keys")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"this node (node_b): v2 key fingerprint {prints['b']}"
    assert lines[1] == "1 pinned peer key(s)"
    assert lines[2].startswith(f"  node_a  {prints['old']}  pinned 20")
    assert "1 changed key(s) refused until you accept them" in lines[3]
    assert lines[4].startswith(f"  node_a  new {prints['new']}  seen 20")

    code, out = run(url, "keys", "accept", "node_a")
    assert code == 0 and out.strip() == f"node_a: accepted key {prints['new']}"

    code, out = run(url, "keys", "--json")
    keys = json.loads(out)
    assert keys["pending_changes"] == []
    assert [(p["node_id"], p["fingerprint"]) for p in keys["pinned"]] == [
        ("node_a", prints["new"])]

    code, out = run(url, "keys", "accept", "node_a")
    assert code == 2 and "HTTP 404: no pending key change for node 'node_a'" in out


def test_errors_name_the_problem(served_b: tuple[str, dict[str, str]]) -> None:
    url, _ = served_b
    # A node id is sent as one quoted path segment: "../approvals" reaches no other route.
    code, out = run(url, "keys", "accept", "../approvals")
    assert code == 2 and out.strip() == "Error: HTTP 404: Not Found"
    code, out = run(url, "keys", "accept", "node q")
    assert code == 2 and "HTTP 404: no pending key change for node 'node q'" in out
    code, out = run(url, "keys", key="wrong")
    assert code == 2 and "HTTP 401" in out
    code, out = run(url, "keys", "accept")
    assert code == 2 and "Missing argument 'NODE_ID'" in out
    code, out = run("http://127.0.0.1:9", "keys")
    assert code == 2 and "cannot reach the node" in out
