"""``darkmesh intro …`` with no node key: the CLI signs as ``darkmesh-operator@<node_id>``
with the key ``darkmesh keygen --operator`` wrote, against a node in ``aauth`` mode whose
trust registry lists that operator (``aauth.md`` §5.3 step 2).

Real HTTP on 127.0.0.1: the node and a relay are served by Hypercorn in this process; the
CLI runs through the root ``darkmesh`` command, so it loads the settings file and the
installed signer exactly as an operator's shell would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from darkmesh_aauth.keys import signing_key_from_jwk
from darkmesh_aauth.signer import RoleKey
from darkmesh_aauth.testing import Agent, new_agent, write_trust_file
from darkmesh_warm_intro.cluster import demo_rows

from sdl_core import Host, RelayHost, RelaySettings
from sdl_core.cli import main
from sdl_core.node_app import create_node_app
from sdl_core.plugins import make_plugin_manager
from sdl_core.relay.app import create_relay_app
from sdl_core.testing.host import TEST_BUILTINS
from sdl_core.testing.relay_process import free_port
from sdl_core.testing.served import served_app

NODE_ID = "node_a"
OPERATOR_SUB = f"darkmesh-operator@{NODE_ID}"
ISS = "https://darkmesh.local"
RELAY_KEY = "operator-cli-relay-key"
OPERATOR_CAPABILITIES = ("node.query", "node.consent", "node.approve", "node.ingest")
#: The CLI loads only what this node needs (the environment may hold other plugins).
ENV = {"DARKMESH_LOAD_PLUGINS": "darkmesh-warm-intro,darkmesh-aauth",
       "DARKMESH_NODE_KEY": None, "DARKMESH_CONFIG": None}


@dataclass
class Served:
    config: Path
    trust: Path
    operator: Agent  # the key `darkmesh keygen --operator` wrote, as a registry entry
    url: str
    login_url: str  # the dashboard link `darkmesh node serve` prints


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], env=ENV)
    return result.exit_code, result.output


def write_config(root: Path, port: int, relay_url: str, trust: Path) -> Path:
    config = root / "darkmesh.toml"
    config.write_text(f"""\
[node]
node_id = "{NODE_ID}"
port = {port}
listen_url = "http://127.0.0.1:{port}"
auth_mode = "aauth"
store = "memory"
data_dir = "{root / 'data'}"
relay_url = "{relay_url}"
relay_key = "{RELAY_KEY}"
relay_outbound_auth = "hmac"
listener = false

[warm_intro]
response_wait_seconds = 2.0

[aauth]
trusted_agents_file = "{trust}"
private_jwk_path = "{root / 'keys' / 'node.private.jwk'}"
""", encoding="utf-8")
    return config


def keygen_operator(config: Path) -> Agent:
    code, out = cli(config, "keygen", "--operator")
    assert code == 0, out
    made = json.loads(out)
    assert made["sub"] == OPERATOR_SUB and made["name"] == "operator"
    private = json.loads(Path(made["private_file"]).read_text(encoding="utf-8"))
    assert "d" in private and "d" not in made["public_jwk"]
    key = signing_key_from_jwk(private)
    assert key.thumbprint == made["thumbprint"]
    role = RoleKey(key=key, sub=OPERATOR_SUB, iss=ISS, kid=key.kid, ttl=300)
    return Agent(key=key, role=role, capabilities=OPERATOR_CAPABILITIES)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("operator-cli")
    trust = root / "trusted_agents.json"
    port = free_port()
    relay = RelayHost(make_plugin_manager(only={"darkmesh-sdl.memory"}, environ={}),
                      RelaySettings(backend="memory", key=RELAY_KEY, auth_mode="hmac"))
    with served_app(create_relay_app(relay), health_path="/darkmesh/relay/health") as relay_url:
        config = write_config(root, port, relay_url, trust)
        code, out = cli(config, "keygen")  # the node's own key (aauth mode needs one)
        assert code == 0, out
        operator = keygen_operator(config)
        # Until the operator is trusted, only an unrelated key with the same sub is.
        write_trust_file(trust, [new_agent(sub=OPERATOR_SUB, capabilities=OPERATOR_CAPABILITIES)])
        pm = make_plugin_manager(only=TEST_BUILTINS | {"darkmesh-warm-intro", "darkmesh-aauth"},
                                 environ={})
        host = Host.create(config=config, pm=pm)
        app = create_node_app(host)  # prepares the host: its store exists from here on
        asyncio.run(host.store.upsert("contacts", demo_rows("node_a_contacts.csv")))
        with served_app(app, port=port, health_path="/darkmesh/health") as url:
            yield Served(config=config, trust=trust, operator=operator, url=url,
                         login_url=app.state.dashboard.login_url())


def test_untrusted_operator_key_is_refused(served: Served) -> None:
    write_trust_file(served.trust, [new_agent(sub=OPERATOR_SUB)])
    code, out = cli(served.config, "intro", "request", "--company", "Company X")
    assert code == 2 and "HTTP 401" in out


def test_signed_request_keys_and_missing_capability(served: Served) -> None:
    query_only = Agent(key=served.operator.key, role=served.operator.role,
                       capabilities=("node.query",))
    write_trust_file(served.trust, [query_only])
    code, out = cli(served.config, "intro", "request", "--company", "Company X", "--role",
                    "Business Development", "--json")
    assert code == 0, out
    answer = json.loads(out)
    # No other node serves v2 on this relay: complete at once, nobody to wait for.
    assert answer["template"] == "warm_intro_v2" and answer["state"] == "complete"
    assert (answer["live_nodes"], answer["answered"], answer["candidates"]) == (0, 0, [])
    code, out = cli(served.config, "intro", "keys")
    assert code == 0 and out.startswith(f"this node ({NODE_ID}): v2 key fingerprint ")
    # The registry grants node.query only: approving needs node.approve.
    code, out = cli(served.config, "intro", "approve", "v2-000000000000")
    assert code == 2 and "HTTP 403" in out and "node.approve" in out


def test_fully_trusted_operator_reaches_every_operator_route(served: Served) -> None:
    write_trust_file(served.trust, [served.operator])
    code, out = cli(served.config, "intro", "pending")
    assert code == 0 and out.strip() == "0 pending approval(s)"
    code, out = cli(served.config, "intro", "approve", "v2-000000000000")
    assert code == 2 and "HTTP 404: approval_id not found or expired" in out
    code, out = cli(served.config, "intro", "status", "0123456789abcdef")
    assert code == 2 and "HTTP 404: request_id not found or expired" in out


def test_a_node_key_still_wins_over_the_signer(served: Served) -> None:
    # --node-key present: the CLI sends it instead of signing; an aauth node refuses it.
    write_trust_file(served.trust, [served.operator])
    code, out = cli(served.config, "intro", "--node-key", "some-key", "pending")
    assert code == 2 and "HTTP 401" in out


@pytest.mark.asyncio
async def test_mcp_server_signs_as_the_operator(served: Served) -> None:
    """``darkmesh mcp`` (real subprocess, stdio) reaches the aauth node with the operator
    key only: no shared key exists in its settings."""
    from mcp import Client, StdioServerParameters

    write_trust_file(served.trust, [served.operator])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKMESH_", "NEOTOMA_"))}
    env["DARKMESH_LOAD_PLUGINS"] = "darkmesh-warm-intro,darkmesh-aauth"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", "from sdl_core.cli import main; main()", "--config", str(served.config),
              "mcp"],
        env=env, cwd=str(served.config.parent),
    )
    async with Client(params) as client:
        status = await client.call_tool("node_status", {})
        assert not status.is_error, status.content
        assert status.structured_content["health"]["node_id"] == NODE_ID
        pending = await client.call_tool("list_pending_approvals", {})
        assert not pending.is_error and pending.structured_content["approvals"] == []
    # With the operator entry limited to node.query, the approvals list is refused.
    write_trust_file(served.trust, [Agent(key=served.operator.key, role=served.operator.role,
                                          capabilities=("node.query",))])
    async with Client(params) as client:
        refused = await client.call_tool("list_pending_approvals", {})
        assert refused.is_error and "node.approve" in getattr(refused.content[0], "text", "")


def test_dashboard_calls_skill_routes_signed_as_the_operator(served: Served) -> None:
    """The dashboard reaches the skill's routes with the operator's signature (the node is
    in aauth mode and has no shared key); a refused capability shows in its panel."""
    write_trust_file(served.trust, [served.operator])
    token = served.login_url.split("token=", 1)[1]
    with httpx.Client(base_url=served.url, timeout=30) as browser:
        login = browser.get("/darkmesh/ui/login", params={"token": token})
        assert login.status_code == 200
        page = browser.get("/darkmesh/ui")
        assert page.status_code == 200
        approvals = page.text.split('id="approvals"', 1)[1].split("</section>", 1)[0]
        assert "Nothing waits for your consent." in approvals
        write_trust_file(served.trust, [Agent(key=served.operator.key, role=served.operator.role,
                                              capabilities=("node.query",))])
        refused = browser.get("/darkmesh/ui").text
        approvals = refused.split('id="approvals"', 1)[1].split("</section>", 1)[0]
        assert "403" in approvals and "node.approve" in approvals


def test_status_signs_as_the_operator_on_an_aauth_node(served: Served) -> None:
    # A node_key left in the environment does not count in aauth mode: status signs.
    write_trust_file(served.trust, [served.operator])
    result = CliRunner().invoke(main, ["--config", str(served.config), "status"],
                                env={**ENV, "DARKMESH_NODE_KEY": "left-over-shared-key"})
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["health"]["node_id"] == NODE_ID
    assert "integrations" in status
