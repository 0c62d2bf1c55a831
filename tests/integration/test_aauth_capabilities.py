"""Per-role capabilities across the system (aauth.md §4.1, §7.4): a connector holding only
``node.ingest`` ingests through the real CSV connector, but the relay refuses it
``relay.publish`` and the node refuses it every ``node.query`` (and other) route."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aauth_kit import (
    BASE_REQUEST,
    NODE_BUILTINS,
    RELAY_CAPABILITIES,
    SKILL,
    Identity,
    build_mesh,
    plan_mesh,
    signed_node_client,
    signed_relay_client,
)
from darkmesh_warm_intro.cluster import demo_rows

from sdl_core.connectors.common import (
    ConnectorAuth,
    ConnectorOptions,
    build_connector_signer,
    prepare_auth,
    resolve_options,
)
from sdl_core.connectors.csv import CONTACTS, INTERACTIONS, ingest_files
from sdl_core.plugins import make_plugin_manager

DEMO = Path(str(resources.files("darkmesh_warm_intro").joinpath("demo_data")))


def write_private_jwk(path: Path, who: Identity) -> None:
    """As ``darkmesh keygen`` does: created 0600, never group/other readable."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(who.jwk, handle)


def connector_auth(options: ConnectorOptions, names: list[str]) -> dict[str, ConnectorAuth]:
    """``prepare_auth`` with the signer plugin loaded by name (the shell's plugin switches
    and whatever else is installed stay out of this test)."""
    pm = make_plugin_manager(only=NODE_BUILTINS, environ={})
    return prepare_auth(options, names,
                        signer_factory=lambda o: build_connector_signer(o, pm=pm))


def denied_capability(response: httpx.Response, sub: str, capability: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == (
        f"agent '{sub}' is not permitted to use capability '{capability}'")
    # A 403 is about permission, not verification: no Signature-Error (aauth.md §2.4).
    assert "signature-error" not in response.headers


@pytest.mark.asyncio
@pytest.mark.usefixtures("darkmesh_clean_env")
async def test_connector_ingests_but_cannot_query_or_publish(tmp_path: Path) -> None:
    plan = plan_mesh(tmp_path / "mesh", {"node_a": "aauth"})
    keys = plan.keys["node_a"]
    contacts_key, interactions_key = (keys.connectors["csv-contacts"],
                                      keys.connectors["csv-interactions"])
    key_dir = tmp_path / "op" / "keys"
    write_private_jwk(key_dir / "connector-csv-contacts.private.jwk", contacts_key)
    write_private_jwk(key_dir / "connector-csv-interactions.private.jwk", interactions_key)
    # The operator's settings file, as the connector reads it (cwd is a scratch dir).
    Path("darkmesh.toml").write_text(
        '[node]\nnode_id = "node_a"\nlisten_url = "http://node_a.mesh"\n'
        'auth_mode = "aauth"\n'
        f'[aauth]\nkey_dir = "{key_dir}"\n', encoding="utf-8")

    async with build_mesh(plan) as mesh:
        # 1. The real CSV connector, each dataset signed by its own connector key.
        options = resolve_options(url=None, timeout=10, dry_run=False, quiet=True,
                                  auth_mode=None, node_key=None, aauth_private_jwk=None,
                                  aauth_sub=None, aauth_iss=None)
        assert options.url == "http://node_a.mesh" and options.node_key == ""
        summary = await ingest_files(
            [(CONTACTS, DEMO / "node_a_contacts.csv"),
             (INTERACTIONS, DEMO / "node_a_interactions.csv")],
            options, 1000, auth_factory=connector_auth,
            transport=httpx.ASGITransport(app=mesh.apps["node_a"]))
        counts = {d["dataset"]: (d["count"], d["auth"]) for d in summary["datasets"]}
        assert counts == {
            "contacts": (len(demo_rows("node_a_contacts.csv")), "aauth"),
            "interactions": (len(demo_rows("node_a_interactions.csv")), "aauth"),
        }
        assert await mesh.nodes["node_a"].store.count("contacts") == counts["contacts"][0]

        # 2. Every node route beyond ingest is refused, naming the capability.
        sub = contacts_key.sub
        async with signed_node_client(mesh, "node_a", contacts_key) as connector:
            for path in ("/darkmesh/capabilities", "/darkmesh/node/card",
                         "/darkmesh/integrations/status", "/darkmesh/metrics",
                         "/darkmesh/plugins"):
                denied_capability(await connector.get(path), sub, "node.query")
            denied_capability(await connector.post(f"{SKILL}/request", json=BASE_REQUEST),
                              sub, "node.query")
            denied_capability(await connector.post(f"{SKILL}/consent", json={
                "request_id": "r", "consent_id": "c"}), sub, "node.consent")
            denied_capability(await connector.get(f"{SKILL}/approvals"), sub, "node.approve")
            # ... while its own route still works.
            ok = await connector.post("/darkmesh/ingest", json={
                "dataset": "contacts", "records": [{"email": "new@x.test", "name": "N"}]})
            assert ok.status_code == 200, ok.text

        # 3. At the relay: unknown there (401), then known with node.ingest only (403).
        publish = {"request_id": "req-1", "requester_id": "node_a",
                   "template": "warm_intro_v2", "target": {"company": "Company X"}}
        async with signed_relay_client(mesh, contacts_key) as at_relay:
            unknown = await at_relay.post("/darkmesh/relay/posts", json=publish)
            assert (unknown.status_code, unknown.json()["reason"]) == (401, "unknown_thumbprint")
            assert unknown.headers["signature-error"] == "error=unknown_key"
            plan.write_relay_trust([*plan.relay_agents, contacts_key])  # hot-reloaded
            denied_capability(await at_relay.post("/darkmesh/relay/posts", json=publish),
                              sub, "relay.publish")
            denied_capability(await at_relay.post("/darkmesh/relay/posts/pull",
                                                  json={"node_id": "node_a"}),
                              sub, "relay.pull")
            denied_capability(await at_relay.get("/darkmesh/relay/nodes"), sub, "relay.list")

            # 4. Even granted every relay capability, a connector is no node (§4.2).
            everything = contacts_key.granting(["*"])
            plan.write_relay_trust([*plan.relay_agents, everything])
            for path, body, message in (
                ("nodes/register", {"node_id": "node_a", "url": "http://node_a.mesh"},
                 f"AAuth sub '{sub}' does not match node_id 'node_a'"),
                ("posts", publish, f"AAuth sub '{sub}' does not match requester_id 'node_a'"),
                ("posts/pull", {"node_id": "node_a"},
                 f"AAuth sub '{sub}' does not match node_id 'node_a'"),
                ("mailbox/pull", {"node_id": "node_a"},
                 f"AAuth sub '{sub}' does not own mailbox 'node_a'"),
                ("mailbox/send", {"to": "node_a", "request_id": "r", "payload": "aGk="},
                 f"AAuth sub '{sub}' is not a node and cannot send mail"),
            ):
                refused = await at_relay.post(f"/darkmesh/relay/{path}", json=body)
                assert (refused.status_code, refused.json()["detail"]) == (403, message), path

        # The node's own key (relay capabilities) still publishes: the grant is per key.
        async with signed_relay_client(mesh, keys.node) as as_node:
            published = await as_node.post("/darkmesh/relay/posts", json=publish)
            assert published.status_code == 200, published.text
        assert set(RELAY_CAPABILITIES) == set(keys.node.agent.capabilities)


@pytest.mark.asyncio
@pytest.mark.usefixtures("darkmesh_clean_env")
async def test_connector_in_aauth_mode_without_its_key_names_the_flag(tmp_path: Path) -> None:
    """aauth.md §5.2 connector row: no key, no ingest (and no shared-key fallback)."""
    import click

    Path("darkmesh.toml").write_text(
        '[node]\nnode_id = "node_a"\nlisten_url = "http://node_a.mesh"\n'
        f'auth_mode = "aauth"\n[aauth]\nkey_dir = "{tmp_path / "empty"}"\n', encoding="utf-8")
    options = resolve_options(url=None, timeout=10, dry_run=False, quiet=True, auth_mode=None,
                              node_key="some-shared-key", aauth_private_jwk=None,
                              aauth_sub=None, aauth_iss=None)
    with pytest.raises(click.UsageError) as refused:
        connector_auth(options, ["csv-contacts"])
    assert "--aauth-private-jwk" in str(refused.value.message)
    assert "connector-csv-contacts@node_a" in str(refused.value.message)
