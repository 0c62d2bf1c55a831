"""Issue 4 "End to end": a relay and three nodes in ``aauth`` mode, real processes on
127.0.0.1, with no shared key anywhere.

Everything goes through the ``darkmesh`` command line, as an operator would do it:
``keygen`` (node, operator, one key per CSV connector), ``trust add`` with per-role
capabilities (the relay trusts each node with the five relay capabilities, one of them
paired ``--from-url``; each node trusts its operator and its connectors), ``relay
serve`` / ``node serve``, ``ingest csv`` signing as the connectors, and ``intro
request|consent|pending|approve|status`` signing as the operator. Then: a connector's
key opens nothing but ingest, a node key cannot act as another node, and ``trust
remove`` revokes a node on its next request, no restart.

The processes run from a directory other than the settings files', so every key is found
through the settings (``keys/`` beside the settings file), never the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import tomli_w
from darkmesh_aauth.keys import load_private_key_file
from darkmesh_aauth.signer import AAuthAuth, RoleKey

from sdl_core.testing.polling import until
from sdl_core.testing.relay_process import free_port

pytestmark = pytest.mark.e2e

T = TypeVar("T")

CLI = (sys.executable, "-c", "from sdl_core.cli import main; main()")
PLUGINS = "darkmesh-warm-intro,darkmesh-aauth"
NODES = {"node_a": "founder@startup.com", "node_b": "casey@connector.com",
         "node_c": "carol@elsewhere.com"}
RELAY_CAPS = "relay.register,relay.publish,relay.pull,relay.mailbox.send,relay.mailbox.read"
OPERATOR_CAPS = "node.query,node.consent,node.approve,node.ingest"
CONNECTORS = ("csv-contacts", "csv-interactions")
#: The node the relay trusts through `trust add --from-url` (the others: --public-jwk).
PAIRED_FROM_URL = "node_c"
TAYLOR = {"name": "Taylor BD", "email": "taylor@companyx.com", "org": "Company X",
          "role": "Business Development"}
START_TIMEOUT = 30.0
#: Names a shared secret could hide under, in a settings file or the environment.
SHARED_KEY_FIELDS = {"key", "node_key", "peer_key", "relay_key"}




def write_toml(path: Path, tables: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(tables), encoding="utf-8")


def demo_file(name: str) -> Path:
    found = resources.files("darkmesh_warm_intro").joinpath("demo_data", name)
    return Path(str(found))


@dataclass
class Proc:
    name: str
    url: str
    health: str
    args: tuple[str, ...]
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Mesh:
    """The relay and nodes of this module, and the command line to drive them."""

    root: Path
    env: dict[str, str]
    relay_config: Path
    relay_trust: Path
    relay: Proc | None = None
    nodes: dict[str, Proc] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------ command line

    def cli(self, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CLI, "--config", str(config), *args], env=self.env,
                                cwd=self.root, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"darkmesh {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def cli_json(self, config: Path, *args: str) -> Any:
        return json.loads(self.cli(config, *args).stdout)

    # --------------------------------------------------------------- processes

    def spawn(self, proc: Proc) -> None:
        handle = proc.log.open("ab")
        try:
            proc.process = subprocess.Popen([*CLI, *proc.args], env=self.env, cwd=self.root,
                                            stdout=handle, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        finally:
            handle.close()

    def wait_healthy(self, proc: Proc) -> None:
        def healthy() -> bool:
            assert proc.process is not None
            if proc.process.poll() is not None:
                raise AssertionError(f"{proc.name} exited {proc.process.returncode}:\n"
                                     f"{proc.log.read_text(errors='replace')[-3000:]}")
            try:
                return httpx.get(proc.url + proc.health, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until(healthy, f"{proc.name} healthy", timeout=START_TIMEOUT)

    def stop_all(self) -> None:
        """Stop only what this mesh started, by its own handles; SIGTERM, then kill."""
        procs = [p for p in [*self.nodes.values(), self.relay] if p and p.process]
        for proc in procs:
            if proc.process is not None and proc.process.poll() is None:
                proc.process.terminate()
        for proc in procs:
            assert proc.process is not None
            try:
                proc.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait(timeout=5)

    # ----------------------------------------------------------------- signing

    def auth(self, node_id: str, name: str, sub: str) -> httpx.Auth:
        """Sign as the key ``<node dir>/keys/<name>.private.jwk`` does (that process's key)."""
        key = load_private_key_file(self.root / node_id / "keys" / f"{name}.private.jwk")
        role = RoleKey(key=key, sub=sub, iss="https://darkmesh.local", kid=key.kid, ttl=300)
        return AAuthAuth(role, authority=None, profile="darkmesh", window=60, send_keyid=True)

    def node_auth(self, node_id: str) -> httpx.Auth:
        return self.auth(node_id, "node", f"darkmesh-node@{node_id}")

    def relay_post(self, auth: httpx.Auth, path: str, body: dict[str, Any]) -> httpx.Response:
        assert self.relay is not None
        return httpx.post(f"{self.relay.url}/darkmesh/relay/{path}", json=body, auth=auth,
                          timeout=10)

    def registered(self) -> set[str]:
        """The node ids the relay lists, read with the monitor's relay.list grant."""
        assert self.relay is not None
        auth = self.auth("monitor", "node", "monitor@relay-operator")
        response = httpx.get(f"{self.relay.url}/darkmesh/relay/nodes", auth=auth, timeout=5)
        assert response.status_code == 200, response.text
        return {n["node_id"] for n in response.json()["nodes"]}


def node_tables(mesh: Mesh, node_id: str, port: int, relay_url: str) -> dict[str, Any]:
    node_dir = mesh.root / node_id
    return {
        "node": {
            "node_id": node_id, "host": "127.0.0.1", "port": port,
            "listen_url": f"http://127.0.0.1:{port}", "relay_url": relay_url,
            "auth_mode": "aauth", "store": "vault", "data_dir": str(node_dir / "data"),
            "vault_key_file": str(node_dir / "secrets" / "vault.key"),
            "self_identifiers": [NODES[node_id]], "log_format": "text",
            "listener_wait_seconds": 2.0,
        },
        "aauth": {
            "private_jwk_path": str(node_dir / "keys" / "node.private.jwk"),
            "trusted_agents_file": str(node_dir / "trusted_agents.json"),
        },
        "warm_intro": {"response_wait_seconds": 5.0},
    }


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("aauth-mesh")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKMESH_", "NEOTOMA_"))}
    env.update({"DARKMESH_LOAD_PLUGINS": PLUGINS, "HOME": str(root)})
    relay_port = free_port()
    relay_url = f"http://127.0.0.1:{relay_port}"
    m = Mesh(root=root, env=env, relay_config=root / "relay" / "relay.toml",
             relay_trust=root / "relay" / "trusted_agents.json")
    write_toml(m.relay_config, {
        "relay": {"host": "127.0.0.1", "port": relay_port, "public_url": relay_url,
                  "auth_mode": "aauth", "backend": "sqlite",
                  "data_dir": str(root / "relay" / "data")},
        "aauth": {"relay_trusted_agents_file": str(m.relay_trust)},
    })
    try:
        # -- keys and trust, all through the CLI ------------------------------------
        for node_id in NODES:
            config = root / node_id / "darkmesh.toml"
            m.configs[node_id] = config
            write_toml(config, node_tables(m, node_id, free_port(), relay_url))
            made = {"node": m.cli_json(config, "keygen"),
                    "operator": m.cli_json(config, "keygen", "--operator")}
            for name in CONNECTORS:
                made[name] = m.cli_json(config, "keygen", "--connector", name)
            m.keys[node_id] = made
            assert made["node"]["sub"] == f"darkmesh-node@{node_id}"
            assert made["operator"]["sub"] == f"darkmesh-operator@{node_id}"
            if node_id != PAIRED_FROM_URL:
                added = m.cli_json(m.relay_config, "trust", "add", "--relay", "--public-jwk",
                                   made["node"]["public_file"], "--sub", made["node"]["sub"],
                                   "--capabilities", RELAY_CAPS, "--label", f"{node_id} here")
                assert added["action"] == "append"
            m.cli_json(config, "trust", "add", "--public-jwk", made["operator"]["public_file"],
                       "--sub", made["operator"]["sub"], "--capabilities", OPERATOR_CAPS)
            for name in CONNECTORS:
                m.cli_json(config, "trust", "add", "--public-jwk", made[name]["public_file"],
                           "--sub", made[name]["sub"], "--capabilities", "node.ingest")
        # A relay-side observer that may list nodes and nothing else (no node id).
        monitor_dir = root / "monitor" / "keys"
        monitor = json.loads(m.cli(m.relay_config, "keygen", "--out", str(monitor_dir)).stdout)
        m.cli_json(m.relay_config, "trust", "add", "--relay", "--public-jwk",
                   monitor["public_file"], "--sub", "monitor@relay-operator",
                   "--capabilities", "relay.list")

        # -- processes -----------------------------------------------------------------
        m.relay = Proc("relay", relay_url, "/darkmesh/relay/health",
                       ("--config", str(m.relay_config), "--log-level", "warning", "relay",
                        "serve"), root / "relay.log")
        m.spawn(m.relay)
        m.wait_healthy(m.relay)
        for node_id, config in m.configs.items():
            url = tomllib.loads(config.read_text())["node"]["listen_url"]
            proc = Proc(node_id, url, "/darkmesh/health",
                        ("--config", str(config), "--log-level", "warning", "node", "serve"),
                        root / f"{node_id}.log")
            m.nodes[node_id] = proc
            m.spawn(proc)
        for proc in m.nodes.values():
            m.wait_healthy(proc)
        # The relay operator pairs the last node from its URL (JWKS + health), checking
        # the thumbprint its operator read out of `darkmesh keygen`; hot-reloaded, so the
        # node's listener gets in on its next retry.
        paired = m.cli_json(m.relay_config, "trust", "add", "--relay", "--from-url",
                            m.nodes[PAIRED_FROM_URL].url, "--expect-thumbprint",
                            m.keys[PAIRED_FROM_URL]["node"]["thumbprint"],
                            "--capabilities", RELAY_CAPS)
        assert (paired["action"], paired["sub"]) == ("append", f"darkmesh-node@{PAIRED_FROM_URL}")

        # -- data, through the CSV connector signing as each connector ----------------
        for node_id, config in m.configs.items():
            summary = m.cli_json(config, "ingest", "csv", "--quiet",
                                 "--contacts", str(demo_file(f"{node_id}_contacts.csv")),
                                 "--interactions",
                                 str(demo_file(f"{node_id}_interactions.csv")))
            assert {(d["connector"], d["auth"]) for d in summary["datasets"]} == {
                ("csv-contacts", "aauth"), ("csv-interactions", "aauth")}
            assert all(d["count"] and d["count"] > 0 for d in summary["datasets"])
        until(lambda: m.registered() == set(NODES), "all three nodes registered")
        yield m
    finally:
        m.stop_all()


def intro(mesh: Mesh, node_id: str, *args: str) -> Any:
    """``darkmesh intro … --json`` against ``node_id``, signed as its operator."""
    return mesh.cli_json(mesh.configs[node_id], "intro", *args, "--json")


# ------------------------------------------------------------------------------ tests


def test_no_shared_key_in_any_config_or_environment(mesh: Mesh) -> None:
    for config in [mesh.relay_config, *mesh.configs.values()]:
        tables = tomllib.loads(config.read_text())
        for name, table in tables.items():
            present = SHARED_KEY_FIELDS & set(table)
            assert not present, f"{config} [{name}] holds {present}"
    assert not [k for k in mesh.env if k.startswith("DARKMESH_") and k.endswith("KEY")]
    # The running processes confirm it: a shared key opens nothing.
    node = mesh.nodes["node_a"]
    for headers in ({"X-Darkmesh-Key": "guess"}, {"Authorization": "Bearer guess"}):
        refused = httpx.get(f"{node.url}/darkmesh/capabilities", headers=headers, timeout=5)
        assert (refused.status_code, refused.json()["detail"]) == (
            401, "AAuth signature required")
        assert refused.headers["signature-error"] == "error=invalid_request"
    assert mesh.relay is not None
    refused = httpx.post(f"{mesh.relay.url}/darkmesh/relay/posts/pull",
                         json={"node_id": "node_a", "relay_key": "guess"}, timeout=5)
    assert (refused.status_code, refused.json()["detail"]) == (401, "AAuth signature required")
    # The operator's own tools need none either: `darkmesh status` signs as the operator.
    status = mesh.cli_json(mesh.configs["node_a"], "status")
    assert status["health"]["node_id"] == "node_a"
    assert status["integrations"]["ready"] is True
    # `darkmesh settings` shows no shared key set for any node.
    settings = mesh.cli_json(mesh.configs["node_a"], "settings", "--json")
    node_fields = {f["name"]: f["current"] for model in settings
                   if model["section"] == "node" for f in model["fields"]}
    assert {name: node_fields[name] for name in ("node_key", "peer_key", "relay_key")} == {
        "node_key": "", "peer_key": "", "relay_key": ""}


def test_full_v2_intro_through_the_operator_cli(mesh: Mesh) -> None:
    started = time.monotonic()
    answer = intro(mesh, "node_a", "request", "--company", "Company X", "--role",
                   "Business Development")
    assert (answer["live_nodes"], answer["answered"]) == (2, 2), answer
    (candidate,) = answer["candidates"]
    assert candidate["score"] == 0.904 and candidate["requires_consent"] is True
    assert "node_b" not in json.dumps(answer) and "@" not in json.dumps(answer["candidates"])
    request_id = answer["request_id"]
    consent = intro(mesh, "node_a", "consent", request_id, candidate["consent_id"])
    assert consent["state"] == "pending" and consent["intro"] is None

    def approval() -> dict[str, Any] | None:
        pending = intro(mesh, "node_b", "pending")["approvals"]
        return next((a for a in pending if a["request_id"] == request_id), None)

    found = until(approval, "node_b sees the approval")
    assert found["requester_node_id"] == "node_a"  # stamped by the relay from the signer
    assert found["contact"]["name"] == "Taylor BD"
    approved = intro(mesh, "node_b", "approve", found["approval_id"])
    assert approved["state"] == "approved"

    def revealed() -> dict[str, Any] | None:
        status = intro(mesh, "node_a", "status", request_id)
        return status if status.get("intros") else None

    status = until(revealed, "node_a sees the intro")
    (shown,) = status["intros"].values()
    assert shown["target_contact"] == TAYLOR
    assert shown["connector"]["node_id"] == "node_b"
    assert [c["score"] for c in status["candidates"]] == [0.904]
    final = intro(mesh, "node_a", "consent", request_id, candidate["consent_id"])
    assert final["state"] == "revealed" and final["intro"]["target_contact"] == TAYLOR
    assert time.monotonic() - started < 60


def test_connector_key_ingests_only(mesh: Mesh) -> None:
    node = mesh.nodes["node_a"]
    sub = "connector-csv-contacts@node_a"
    connector = mesh.auth("node_a", "connector-csv-contacts", sub)
    ok = httpx.post(f"{node.url}/darkmesh/ingest", auth=connector, timeout=10, json={
        "dataset": "contacts", "records": [{"email": "new@example.test", "name": "New"}]})
    assert ok.status_code == 200, ok.text
    for method, path in (("GET", "/darkmesh/capabilities"),
                         ("POST", "/darkmesh/skills/warm-intro/request")):
        denied = httpx.request(method, f"{node.url}{path}", auth=connector, timeout=10,
                               json={"target": {"company": "Company X"}}
                               if method == "POST" else None)
        assert (denied.status_code, denied.json()["detail"]) == (
            403, f"agent '{sub}' is not permitted to use capability 'node.query'")
    # The relay does not know the connector: 401. Trusted there with node.ingest (hot
    # reload, no restart): 403 naming relay.publish.
    publish = {"request_id": "rq-connector", "requester_id": "node_a",
               "template": "warm_intro_v2", "target": {"company": "Company X"}}
    unknown = mesh.relay_post(connector, "posts", publish)
    assert (unknown.status_code, unknown.json()["reason"]) == (401, "unknown_thumbprint")
    mesh.cli_json(mesh.relay_config, "trust", "add", "--relay", "--public-jwk",
                  mesh.keys["node_a"]["csv-contacts"]["public_file"], "--sub", sub,
                  "--capabilities", "node.ingest")
    denied = mesh.relay_post(connector, "posts", publish)
    assert (denied.status_code, denied.json()["detail"]) == (
        403, f"agent '{sub}' is not permitted to use capability 'relay.publish'")


def test_a_node_key_cannot_act_as_another_node(mesh: Mesh) -> None:
    as_a = mesh.node_auth("node_a")
    for path, body, message in (
        ("nodes/register", {"node_id": "node_b", "url": "http://127.0.0.1:9"},
         "AAuth sub 'darkmesh-node@node_a' does not match node_id 'node_b'"),
        ("posts/pull", {"node_id": "node_b", "capabilities": ["warm_intro_v2"]},
         "AAuth sub 'darkmesh-node@node_a' does not match node_id 'node_b'"),
        ("posts", {"request_id": "rq-x", "requester_id": "node_b",
                   "template": "warm_intro_v2", "target": {"company": "Company X"}},
         "AAuth sub 'darkmesh-node@node_a' does not match requester_id 'node_b'"),
        ("mailbox/pull", {"node_id": "node_b"},
         "AAuth sub 'darkmesh-node@node_a' does not own mailbox 'node_b'"),
        ("mailbox/ack", {"node_id": "node_b", "ids": ["x"]},
         "AAuth sub 'darkmesh-node@node_a' does not own mailbox 'node_b'"),
    ):
        refused = mesh.relay_post(as_a, path, body)
        assert (refused.status_code, refused.json()["detail"]) == (403, message), path


def test_trust_remove_revokes_a_node_on_its_next_request(mesh: Mesh) -> None:
    """Runs last: node_c stays revoked."""
    pids = {name: p.process.pid for name, p in [*mesh.nodes.items(), ("relay", mesh.relay)]
            if p is not None and p.process is not None}
    as_c = mesh.node_auth("node_c")
    pull_c = {"node_id": "node_c", "capabilities": ["warm_intro_v2", "warm_intro_v1"]}
    assert mesh.relay_post(as_c, "posts/pull", pull_c).status_code == 200
    removed = mesh.cli_json(mesh.relay_config, "trust", "remove", "--relay", "--sub",
                            "darkmesh-node@node_c")
    assert removed["action"] == "remove"
    assert removed["removed"] == [mesh.keys["node_c"]["node"]["thumbprint"]]
    for path, body in (("posts/pull", pull_c),
                       ("posts", {"request_id": "rq-c", "requester_id": "node_c",
                                  "template": "warm_intro_v2",
                                  "target": {"company": "Company X"}})):
        refused = mesh.relay_post(as_c, path, body)
        assert refused.status_code == 401, refused.text
        assert refused.json() == {"detail": "AAuth verification failed: unknown_thumbprint",
                                  "reason": "unknown_thumbprint"}
    listed = mesh.cli_json(mesh.relay_config, "trust", "list", "--relay")
    assert listed["last_error"] is None
    assert "darkmesh-node@node_c" not in {e["sub"] for e in listed["entries"]}
    assert {"darkmesh-node@node_a", "darkmesh-node@node_b"} <= {e["sub"] for e in
                                                                listed["entries"]}
    # node_c's own process is refused too, by its next pull: its log says so.
    c_log = mesh.nodes["node_c"].log
    until(lambda: "unknown_thumbprint" in c_log.read_text(errors="replace"),
          "node_c's listener refused", timeout=15)
    # Nobody restarted; node_b still pulls and still answers node_a.
    assert {name: p.process.pid for name, p in [*mesh.nodes.items(), ("relay", mesh.relay)]
            if p is not None and p.process is not None} == pids
    assert all(p.process is not None and p.process.poll() is None
               for p in [*mesh.nodes.values(), mesh.relay] if p is not None)
    b_pull = {"node_id": "node_b", "capabilities": ["warm_intro_v2", "warm_intro_v1"]}
    assert mesh.relay_post(mesh.node_auth("node_b"), "posts/pull", b_pull).status_code == 200
    answer = intro(mesh, "node_a", "request", "--company", "Company X", "--role",
                   "Business Development")
    assert [c["score"] for c in answer["candidates"]] == [0.904]
