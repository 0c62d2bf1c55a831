"""``darkmesh ingest neotoma`` (Phase 0): paged pull, mapping, filter, cap, ingest, dry run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import ServedApp
from darkmesh_neotoma.cli import ingest_neotoma
from darkmesh_neotoma.sync import select
from standin import StandinServer

from sdl_core import Host
from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY, make_host


def seed(server: StandinServer, contacts: list[tuple[str, int]]) -> None:
    """Each (name, n) is stored n times, so its observation_count is n."""
    for round_ in range(max(n for _, n in contacts)):
        entities = [{"entity_type": "contact", "name": name, "email": f"{name.lower()}@x.com",
                     "organization": "Company X"} for name, n in contacts if n > round_]
        response = httpx.post(server.url + "/store", json={
            "idempotency_key": f"seed-{round_}", "entities": entities})
        assert response.status_code == 200


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Host, ServedApp]]:
    host = make_host(node_id="node_b", data_dir=str(tmp_path / "node"))
    with ServedApp(create_node_app(host)) as served:
        yield host, served


@pytest.fixture(autouse=True)
def no_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DARKMESH_CONFIG", raising=False)


def contents(host: Host, dataset: str) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [r async for r in host.store.iterate(dataset)]

    return asyncio.run(collect())


def invoke(*args: str, neotoma_url: str) -> Any:
    return CliRunner().invoke(ingest_neotoma, ["--neotoma-url", neotoma_url, *args],
                              catch_exceptions=False)


def test_ingests_strongest_first_with_filter_and_cap(
    standin: StandinServer, node: tuple[Host, ServedApp]
) -> None:
    host, served = node
    seed(standin, [("Weak", 1), ("Mid", 3), ("Strong", 8), ("Extra", 2)])
    result = invoke("--url", served.url, "--auth-mode", "hmac", "--node-key", TEST_NODE_KEY,
                    "--min-strength", "0.44", "--max-contacts", "2", "--quiet",
                    neotoma_url=standin.url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("entities_received", "contacts_mapped", "contacts_skipped",
                                    "interactions_prepared", "neotoma_url", "entity_type")} == {
        "entities_received": 4, "contacts_mapped": 2, "contacts_skipped": 2,
        "interactions_prepared": 2, "neotoma_url": standin.url, "entity_type": "contact"}
    stored = contents(host, "contacts")
    assert [c["email"] for c in stored] == ["strong@x.com", "mid@x.com"]
    assert stored[0]["strength"] > stored[1]["strength"] >= 0.44
    assert [i["email"] for i in contents(host, "interactions")] == ["strong@x.com", "mid@x.com"]


def test_dry_run_prints_top_contacts_and_ingests_nothing(
    standin: StandinServer, node: tuple[Host, ServedApp]
) -> None:
    host, served = node
    seed(standin, [(f"P{i:02d}", 1 + i % 3) for i in range(14)])
    result = invoke("--url", served.url, "--dry-run", "--quiet", neotoma_url=standin.url)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dry_run"] is True and out["contacts_mapped"] == 14
    assert len(out["top_contacts"]) == 10
    strengths = [c["strength"] for c in out["top_contacts"]]
    assert strengths == sorted(strengths, reverse=True)
    assert contents(host, "contacts") == []


def test_neotoma_http_error_prints_the_body_and_exits_1(strict_standin: StandinServer) -> None:
    result = invoke("--dry-run", "--quiet", neotoma_url=strict_standin.url)
    assert result.exit_code == 1
    assert "AUTH_REQUIRED" in result.stderr and "401" in result.stderr


def test_unreachable_neotoma_exits_1(tmp_path: Path) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    result = invoke("--dry-run", "--quiet", neotoma_url=url)
    assert result.exit_code == 1 and "unreachable" in result.stderr


def test_select_excludes_own_identifiers_and_sorts_stably() -> None:
    entities = [{"entity_id": f"e{i}", "email": f"p{i}@x.com", "observation_count": 2}
                for i in range(3)]
    entities.append({"entity_id": "me", "email": "me@x.com", "observation_count": 50})
    kept, received, skipped = select(entities, now=0.0, self_identifiers=["me@x.com"],
                                     min_strength=0.0, max_contacts=10)
    assert [c.neotoma_entity_id for c in kept] == ["e0", "e1", "e2"]
    assert (received, skipped) == (4, 1)


def test_connector_is_registered_under_ingest() -> None:
    from darkmesh_neotoma import plugin

    [spec] = list(plugin.darkmesh_register_connectors())
    assert spec.name == "neotoma" and spec.command is ingest_neotoma
