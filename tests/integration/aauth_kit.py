"""Shared pieces of the AAuth integration tests: identities, trust files and an
in-process mesh whose relay and nodes verify with the real ``darkmesh-aauth``.

Nothing here fakes a check: every node and the relay run ``darkmesh-aauth``'s verifier
against registry files written like ``darkmesh trust add`` writes them, and every
caller signs with that plugin's signer (``AAuthAuth``). Test keys only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from darkmesh_aauth.keys import generate_jwk, signing_key_from_jwk
from darkmesh_aauth.signer import AAuthAuth, RoleKey
from darkmesh_aauth.testing import Agent, write_trust_file
from darkmesh_warm_intro.cluster import demo_rows

from sdl_core.testing.host import TEST_BUILTINS
from sdl_core.testing.mesh import MESH_RELAY_KEY, InProcessMesh, node_url

Mode = Literal["hmac", "aauth", "either"]

SKILL = "/darkmesh/skills/warm-intro"
ISS = "https://darkmesh.local"
#: What a relay grants each node (aauth.md §5.3 step 3).
RELAY_CAPABILITIES = ("relay.register", "relay.publish", "relay.pull", "relay.mailbox.send",
                      "relay.mailbox.read")
#: What a node grants its own operator CLI (aauth.md §5.3 step 2).
OPERATOR_CAPABILITIES = ("node.query", "node.consent", "node.approve", "node.ingest")
#: What a node grants a v1 peer that signs (aauth.md §5.3 step 2).
PEER_CAPABILITIES = ("node.callback.consent", "node.callback.reveal")
CONNECTORS = ("csv-contacts", "csv-interactions")

SELF_IDS = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
            "node_c": "carol@elsewhere.com"}
TARGET = {"company": "Company X", "role": "Business Development"}
BASE_REQUEST: dict[str, Any] = {"target": TARGET,
                                "constraints": {"max_candidates": 3, "min_strength": 0.5}}
TAYLOR = {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
          "role": "Business Development"}
#: The entry points an AAuth mesh node loads: the test built-ins, the skill, the signer.
NODE_BUILTINS = TEST_BUILTINS | {"darkmesh-warm-intro", "darkmesh-aauth"}


@dataclass(kw_only=True)
class Identity:
    """A private JWK, the agent the registries know it as, and a signing ``httpx.Auth``."""

    jwk: dict[str, Any] = field(repr=False)
    agent: Agent

    @property
    def sub(self) -> str:
        return self.agent.sub

    @property
    def thumbprint(self) -> str:
        return self.agent.thumbprint

    def auth(self, authority: str | None = None) -> httpx.Auth:
        """Sign every request as this identity (fresh signature per attempt)."""
        return AAuthAuth(self.agent.role, authority=authority, profile="darkmesh", window=60,
                         send_keyid=True)

    def granting(self, capabilities: Iterable[str]) -> Identity:
        """The same key with another set of capabilities in its registry entry."""
        agent = Agent(key=self.agent.key, role=self.agent.role,
                      capabilities=tuple(capabilities))
        return Identity(jwk=self.jwk, agent=agent)


def identity(sub: str, capabilities: Iterable[str], alg: Literal["Ed25519", "ES256"] =
             "Ed25519") -> Identity:
    """A fresh key for ``sub`` (``darkmesh keygen`` writes the same JWK shape)."""
    jwk = generate_jwk(alg)
    key = signing_key_from_jwk(jwk)
    role = RoleKey(key=key, sub=sub, iss=ISS, kid=key.kid, ttl=300)
    return Identity(jwk=jwk, agent=Agent(key=key, role=role,
                                         capabilities=tuple(capabilities)))


@dataclass(kw_only=True)
class NodeKeys:
    """Everything one node's operator generates (``keygen``, ``--operator``, connectors)."""

    node: Identity
    operator: Identity
    connectors: dict[str, Identity]


def node_keys(node_id: str) -> NodeKeys:
    return NodeKeys(
        node=identity(f"darkmesh-node@{node_id}", RELAY_CAPABILITIES),
        operator=identity(f"darkmesh-operator@{node_id}", OPERATOR_CAPABILITIES),
        connectors={name: identity(f"connector-{name}@{node_id}", ("node.ingest",))
                    for name in CONNECTORS},
    )


@dataclass(kw_only=True)
class AAuthMeshPlan:
    """The files and settings of one in-process mesh, before it starts.

    ``relay_trust`` and ``node_trust[node_id]`` are the registry files; tests edit them
    (add, remove entries) while the mesh runs, as ``darkmesh trust`` would.
    """

    root: Path
    keys: dict[str, NodeKeys]
    modes: dict[str, Mode]
    relay_mode: Mode
    relay_trust: Path
    node_trust: dict[str, Path]
    relay_agents: list[Identity]
    node_agents: dict[str, list[Identity]]

    def write_relay_trust(self, agents: Sequence[Identity] | None = None) -> None:
        write_trust_file(self.relay_trust, [a.agent for a in
                                            (self.relay_agents if agents is None else agents)])

    def write_node_trust(self, node_id: str, agents: Sequence[Identity] | None = None) -> None:
        chosen = self.node_agents[node_id] if agents is None else agents
        write_trust_file(self.node_trust[node_id], [a.agent for a in chosen])


def plan_mesh(
    root: Path,
    modes: Mapping[str, Mode],
    *,
    relay_mode: Mode = "aauth",
    extra_relay_agents: Sequence[Identity] = (),
    extra_node_agents: Mapping[str, Sequence[Identity]] | None = None,
) -> AAuthMeshPlan:
    """Keys and registries for nodes in ``modes`` (hmac nodes get neither)."""
    root.mkdir(parents=True, exist_ok=True)
    keys = {node_id: node_keys(node_id) for node_id in modes}
    signing = [n for n, mode in modes.items() if mode != "hmac"]
    relay_agents = [keys[n].node for n in signing] + list(extra_relay_agents)
    node_agents = {
        n: [keys[n].operator, *keys[n].connectors.values(),
            *((extra_node_agents or {}).get(n, ()))]
        for n in signing
    }
    plan = AAuthMeshPlan(
        root=root, keys=keys, modes=dict(modes), relay_mode=relay_mode,
        relay_trust=root / "relay-trusted-agents.json",
        node_trust={n: root / f"{n}-trusted-agents.json" for n in signing},
        relay_agents=relay_agents, node_agents=node_agents,
    )
    if relay_mode != "hmac":
        plan.write_relay_trust()
    for node_id in signing:
        plan.write_node_trust(node_id)
    return plan


def build_mesh(plan: AAuthMeshPlan, *, relay_key: str = "", node_key: str = "",
               peer_key: str = "", response_wait_seconds: float = 5.0,
               peers: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
               node_extra: Mapping[str, Mapping[str, Any]] | None = None,
               extra_builtins: Iterable[str] = (),
               node_tables_extra: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
               ) -> InProcessMesh:
    """An :class:`InProcessMesh` for ``plan``.

    Shared keys are empty unless given; an ``hmac`` node or relay needs them. ``peers``
    lists each node's configured v1 peers (none by default: v2 needs none).
    ``extra_builtins`` are entry points every node loads besides :data:`NODE_BUILTINS`;
    ``node_tables_extra`` adds settings tables per node (a node's ``[neotoma]``, say).
    """
    overrides: dict[str, dict[str, Any]] = {}
    node_tables: dict[str, dict[str, dict[str, Any]]] = {}
    for node_id, mode in plan.modes.items():
        values: dict[str, Any] = {
            "auth_mode": mode, "self_identifiers": [SELF_IDS[node_id]],
            "node_key": node_key if mode != "aauth" else "",
            "peer_key": peer_key if mode != "aauth" else "",
            "relay_key": relay_key if mode != "aauth" else "",
            "peers": list((peers or {}).get(node_id, ())),
        }
        values.update((node_extra or {}).get(node_id, {}))
        overrides[node_id] = values
        if mode != "hmac":
            node_tables[node_id] = {"aauth": {
                "private_jwk": json.dumps(plan.keys[node_id].node.jwk),
                "trusted_agents_file": str(plan.node_trust[node_id]),
                "key_dir": str(plan.root / f"{node_id}-keys"),
            }}
        for name, table in (node_tables_extra or {}).get(node_id, {}).items():
            node_tables.setdefault(node_id, {})[name] = dict(table)
    relay_tables = ({"aauth": {"relay_trusted_agents_file": str(plan.relay_trust)}}
                    if plan.relay_mode != "hmac" else {})
    return InProcessMesh(
        list(plan.modes), builtins=NODE_BUILTINS | set(extra_builtins), node_overrides=overrides,
        node_tables=node_tables,
        tables={"warm_intro": {"response_wait_seconds": response_wait_seconds}},
        relay_builtins={"darkmesh-aauth"} if plan.relay_mode != "hmac" else (),
        relay_overrides={"auth_mode": plan.relay_mode, "key": relay_key},
        relay_tables=relay_tables,
    )


def signed_node_client(mesh: InProcessMesh, node_id: str, who: Identity,
                       **kwargs: Any) -> httpx.AsyncClient:
    """A client of ``node_id`` signing as ``who``, carrying no shared key."""
    return mesh.client(node_id, key="", auth=who.auth(), **kwargs)


def signed_relay_client(mesh: InProcessMesh, who: Identity, **kwargs: Any) -> httpx.AsyncClient:
    """A client of the relay signing as ``who``, carrying no shared key."""
    return mesh.relay_client(key="", auth=who.auth(), **kwargs)


async def ingest_demo(mesh: InProcessMesh, plan: AAuthMeshPlan, node_id: str,
                      *, node_key: str = "") -> None:
    """The demo CSV rows into ``node_id``: signed by its connectors, or with the node key
    for an ``hmac`` node."""
    for dataset, connector in (("contacts", "csv-contacts"),
                               ("interactions", "csv-interactions")):
        body = {"dataset": dataset, "records": demo_rows(f"{node_id}_{dataset}.csv")}
        if plan.modes[node_id] == "hmac":
            client = mesh.client(node_id, key=node_key)
        else:
            client = signed_node_client(mesh, node_id, plan.keys[node_id].connectors[connector])
        async with client as http:
            response = await http.post("/darkmesh/ingest", json=body)
            assert response.status_code == 200, response.text


async def approve_and_reveal(mesh: InProcessMesh, requester: httpx.AsyncClient,
                             responder: httpx.AsyncClient,
                             consent: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The responder's operator approves the pending intro ``consent`` names, then the
    requester repeats its consent until the intro is revealed.

    Returns the approval the responder saw and the requester's revealed answer.
    """
    approvals: list[dict[str, Any]] = []

    async def has_approval() -> bool:
        reply = await responder.get(f"{SKILL}/approvals")
        assert reply.status_code == 200, reply.text
        approvals[:] = [x for x in reply.json()["approvals"]
                        if x["request_id"] == consent["request_id"]]
        return bool(approvals)

    await mesh.wait_until(has_approval, timeout=10)
    decided = await responder.post(f"{SKILL}/approvals/{approvals[0]['approval_id']}/approve")
    assert decided.json()["state"] == "approved", decided.text

    result: dict[str, Any] = {}

    async def revealed() -> bool:
        result.update((await requester.post(f"{SKILL}/consent", json=consent)).json())
        return result.get("state") == "revealed"

    await mesh.wait_until(revealed, timeout=10)
    return approvals[0], result


def accepted(metrics: Any, scheme: str) -> float:
    """How many requests a host accepted with ``scheme`` (``aauth`` / ``shared-key``)."""
    value = metrics.registry.get_sample_value("darkmesh_auth_accepted_total",
                                              {"scheme": scheme})
    return float(value or 0.0)


__all__ = [
    "BASE_REQUEST",
    "CONNECTORS",
    "ISS",
    "MESH_RELAY_KEY",
    "NODE_BUILTINS",
    "OPERATOR_CAPABILITIES",
    "PEER_CAPABILITIES",
    "RELAY_CAPABILITIES",
    "SELF_IDS",
    "SKILL",
    "TARGET",
    "TAYLOR",
    "AAuthMeshPlan",
    "Identity",
    "Mode",
    "NodeKeys",
    "accepted",
    "build_mesh",
    "identity",
    "ingest_demo",
    "node_keys",
    "node_url",
    "plan_mesh",
    "signed_node_client",
    "signed_relay_client",
]
