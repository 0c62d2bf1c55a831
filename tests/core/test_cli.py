"""The ``darkmesh`` command line through click's CliRunner (and one real node on loopback)."""

from __future__ import annotations

import asyncio
import json
import stat
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet

from sdl_core.cli import main
from sdl_core.node_app import create_node_app
from sdl_core.plugins import BUILTIN_PREFIX, _entry_points
from sdl_core.testing.host import TEST_NODE_KEY, make_host
from sdl_core.testing.relay_process import free_port
from sdl_core.testing.served import served_app

pytestmark = pytest.mark.usefixtures("darkmesh_clean_env")

#: Built-ins whose modules another engineer may still be writing are not under test here.
_BUILTINS_UNDER_TEST = {"darkmesh-sdl.http", "darkmesh-sdl.memory-store", "darkmesh-sdl.vault",
                        "darkmesh-sdl.memory", "darkmesh-sdl.sqlite"}


def _env(load: str = "no-third-party-plugins") -> dict[str, str]:
    others = {ep.name for ep in _entry_points() if ep.name.startswith(BUILTIN_PREFIX)}
    return {"DARKMESH_LOAD_PLUGINS": load,
            "DARKMESH_DISABLE_PLUGINS": ",".join(sorted(others - _BUILTINS_UNDER_TEST))}


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env if env is not None else _env(),
                              catch_exceptions=False)


def _write_dist(root: Path, dist: str, module: str, source: str) -> None:
    info = root / f"{dist.replace('-', '_')}-0.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text(f"[darkmesh]\n{dist} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


CLI_PLUGIN = """
    import click
    from sdl_core import CommandSpec, ConnectorSpec, hookimpl

    @click.command("hello")
    @click.option("--name", default="world")
    def hello(name):
        "Say hello."
        click.echo(f"hello {name}")

    @click.group("node")
    def node_extras():
        "Extra node commands."

    @node_extras.command("wave")
    def wave():
        click.echo("waving")

    @click.command("carrier")
    @click.option("--dry-run", is_flag=True)
    def carrier(dry_run):
        "Ingest by carrier pigeon."
        click.echo(f"carrier dry_run={dry_run}")

    @hookimpl
    def darkmesh_register_commands():
        yield CommandSpec(name="hello", command=hello)
        yield CommandSpec(name="node", command=node_extras)

    @hookimpl
    def darkmesh_register_connectors():
        yield ConnectorSpec(name="carrier", command=carrier)
"""


@pytest.fixture
def cli_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    _write_dist(tmp_path / "site", "darkmesh-clitest", "darkmesh_clitest_plugin", CLI_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return _env(load="darkmesh-clitest")


# ----------------------------------------------------------------- listings


def test_plugins_lists_builtins_with_marker_and_spec_names(cli_plugin: dict[str, str]) -> None:
    result = invoke(["plugins"], env=cli_plugin)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "darkmesh-sdl.vault 0.1.0 (built-in)" in lines
    assert "    store: vault" in lines
    assert "darkmesh-clitest 0.2" in lines  # third-party: no built-in marker
    assert "    command: hello, node" in lines
    assert "    connector: carrier" in lines


def test_plugins_json(cli_plugin: dict[str, str]) -> None:
    result = invoke(["plugins", "--json"], env=cli_plugin)
    listing = {entry["name"]: entry for entry in json.loads(result.output)}
    assert listing["darkmesh-clitest"]["builtin"] is False
    assert listing["darkmesh-clitest"]["specs"] == {"command": ["hello", "node"],
                                                   "connector": ["carrier"]}
    assert listing["darkmesh-sdl.http"]["builtin"] is True


def test_plugin_commands_top_level_merged_group_and_ingest(cli_plugin: dict[str, str]) -> None:
    assert invoke(["hello", "--name", "mesh"], env=cli_plugin).output == "hello mesh\n"
    assert invoke(["node", "wave"], env=cli_plugin).output == "waving\n"
    node_help = invoke(["node", "--help"], env=cli_plugin).output
    assert "serve" in node_help and "wave" in node_help  # merged, built-in kept
    assert "carrier" in invoke(["ingest", "--help"], env=cli_plugin).output
    assert invoke(["ingest", "carrier", "--dry-run"], env=cli_plugin).output == (
        "carrier dry_run=True\n")


def test_settings_lists_every_model_and_redacts_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "darkmesh.toml"
    config.write_text('[node]\nnode_id = "node_a"\nnode_key = "file-secret-value"\n'
                      '[relay]\nport = 9100\n')
    env = {**_env(), "DARKMESH_RELAY_KEY": "env-secret-value"}
    text = invoke(["--config", str(config), "settings"], env=env).output
    assert "file-secret-value" not in text and "env-secret-value" not in text
    assert "[node]  (darkmesh-sdl: sdl_core.settings.NodeSettings)" in text
    assert "        DARKMESH_NODE_KEY  [node] node_key  default \"\"" in text

    models = json.loads(invoke(["--config", str(config), "settings", "--json"], env=env).output)
    by_section = {m["section"]: {f["name"]: f for f in m["fields"]} for m in models}
    assert by_section["node"]["node_key"]["current"] == "**********"
    assert by_section["node"]["node_key"]["secret"] is True
    assert by_section["node"]["node_id"] == {
        "name": "node_id", "env": "DARKMESH_NODE_ID", "toml": "[node] node_id", "default": None,
        "required": True, "current": "node_a", "secret": False,
        "description": "this node's id (node_a)",
    }
    assert by_section["relay"]["key"]["current"] == "**********"
    assert by_section["relay"]["port"]["current"] == 9100
    assert "file-secret-value" not in json.dumps(models)


def test_settings_shows_raw_values_and_the_error_when_invalid(tmp_path: Path) -> None:
    env = {**_env(), "DARKMESH_PEER_KEY": "peer-secret-value", "DARKMESH_PORT": "77"}
    models = json.loads(invoke(["settings", "--json"], env=env).output)  # no node_id anywhere
    node = next(m for m in models if m["section"] == "node")
    assert "DARKMESH_NODE_ID ([node] node_id) is required" in node["error"]
    fields = {f["name"]: f["current"] for f in node["fields"]}
    assert fields["port"] == "77" and fields["peer_key"] == "**********"


# ----------------------------------------------------------------------- init


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_config_data_dir_and_private_key_file(tmp_path: Path) -> None:
    out = tmp_path / "darkmesh.toml"
    result = invoke(["init", "--node-id", "node_a", "--port", "8101",
                     "--relay-url", "http://127.0.0.1:9000/", "--data-dir", str(tmp_path / "data"),
                     "--vault-key-file", str(tmp_path / "keys" / "a.key"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    node = tomllib.loads(out.read_text())["node"]
    assert node["node_id"] == "node_a" and node["port"] == 8101
    assert node["relay_url"] == "http://127.0.0.1:9000"
    assert len(node["node_key"]) >= 40 and node["peer_key"] != node["node_key"]
    assert (tmp_path / "data").is_dir()
    assert _mode(tmp_path / "keys" / "a.key") == 0o600
    assert _mode(out) == 0o600
    assert node["node_key"] not in result.output  # the secret stays in the file

    again = invoke(["init", "--node-id", "node_a", "-o", str(out)])
    assert again.exit_code == 2
    assert f"{out} already exists; pass --force to overwrite it" in again.output


def test_init_refuses_key_file_inside_data_dir(tmp_path: Path) -> None:
    result = invoke(["init", "--node-id", "n", "--data-dir", str(tmp_path / "d"),
                     "--vault-key-file", str(tmp_path / "d" / "k.key"),
                     "-o", str(tmp_path / "x.toml")])
    assert result.exit_code == 2
    assert "Invalid value for --vault-key-file" in result.output
    assert not (tmp_path / "x.toml").exists()


@pytest.mark.parametrize("args, flag", [
    (["init"], "--node-id is required"),
    (["init", "--node-id", "n", "--port", "0"], "Invalid value for '--port'"),
    (["init", "--node-id", "no spaces"], "Invalid value for '--node-id'"),
    (["init", "--node-id", "n", "--relay-url", "ftp://x"], "Invalid value for '--relay-url'"),
    (["init", "--node-id", "n", "--auth-mode", "open"], "Invalid value for '--auth-mode'"),
    (["init", "--node-id", "n", "--auth-mode", "hmac", "--relay-url", "http://r"],
     "Invalid value for --relay-key"),
    (["node", "serve", "--port", "http"], "Invalid value for '--port'"),
    (["status", "--timeout", "0"], "Invalid value for '--timeout'"),
])
def test_bad_flags_are_named(args: list[str], flag: str) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert flag in result.output


def test_init_from_upstream_converts_config_and_imports_enc_files(tmp_path: Path) -> None:
    vault = tmp_path / "vault_a"
    vault.mkdir()
    key = Fernet.generate_key()
    (vault / "vault.key").write_bytes(key)
    contacts = [{"name": "Taylor", "email": "taylor@companyx.com", "org": "CompanyX",
                 "role": "VP Sales"}]
    (vault / "contacts.enc").write_bytes(Fernet(key).encrypt(json.dumps(contacts).encode()))
    (vault / "interactions.enc").write_bytes(Fernet(key).encrypt(json.dumps(
        [{"email": "taylor@companyx.com", "strength": 0.88}]).encode()))
    upstream = tmp_path / "node_a.json"
    upstream.write_text(json.dumps({
        "node_id": "node_a", "port": 8001, "vault_path": str(vault), "relay_url": "",
        "node_key": "demo-relay-key", "dev_mode": False,
    }))
    out = tmp_path / "darkmesh.toml"
    result = invoke(["init", "--from-upstream", str(upstream), "-o", str(out),
                     "--vault-key-file", str(tmp_path / "keys" / "a.key")])
    assert result.exit_code == 0, result.output
    assert "imported contacts: 1 records" in result.output
    assert "imported interactions: 1 records" in result.output
    node = tomllib.loads(out.read_text())["node"]
    assert node["node_id"] == "node_a"
    assert node["data_dir"] == str(vault)
    assert node["node_key"] == node["peer_key"] == "demo-relay-key"  # DESIGN §11
    # The imported data is in the node's own vault, readable with the new config.
    from sdl_core.host import Host

    async def read_back() -> list[dict[str, Any]]:
        host = Host.create(config=out, pm=_vault_pm())
        host.prepare()
        try:
            return [r async for r in host.store.iterate("contacts")]
        finally:
            await host.stop()

    assert asyncio.run(read_back()) == contacts


def _vault_pm() -> Any:
    from sdl_core.plugins import make_plugin_manager

    return make_plugin_manager(only={"darkmesh-sdl.vault", "darkmesh-sdl.http"})


# --------------------------------------------------------------------- status


@pytest.fixture
def live_node() -> Iterator[int]:
    """A real node served by Hypercorn on 127.0.0.1 (its lifespan starts the host)."""
    port = free_port()
    with served_app(create_node_app(make_host(node_id="node_live", port=port)),
                    health_path="/darkmesh/health", port=port):
        yield port


def test_status_prints_health_and_integrations(live_node: int, tmp_path: Path) -> None:
    config = tmp_path / "darkmesh.toml"
    config.write_text(f'[node]\nnode_id = "node_live"\nnode_key = "{TEST_NODE_KEY}"\n'
                      f'port = {live_node}\n')
    result = invoke(["--config", str(config), "status"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["health"] == {"status": "ok", "node_id": "node_live"}
    assert status["integrations"]["ready"] is False
    assert status["url"] == f"http://localhost:{live_node}"


def test_status_with_wrong_key_names_the_refusal(live_node: int, tmp_path: Path) -> None:
    config = tmp_path / "darkmesh.toml"
    config.write_text('[node]\nnode_id = "node_live"\nnode_key = "not-the-key"\n')
    result = invoke(["--config", str(config), "status", "--url", f"http://127.0.0.1:{live_node}"])
    assert result.exit_code == 2
    assert "answered /darkmesh/integrations/status with 401: invalid node key" in result.output


def test_status_when_node_is_down_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "darkmesh.toml"
    config.write_text('[node]\nnode_id = "node_a"\nnode_key = "k-123456"\n')
    port = free_port()
    result = invoke(["--config", str(config), "status", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: node at http://127.0.0.1:{port} is not reachable (ConnectError); start it "
        "with `darkmesh node serve` or pass --url\n")


# --------------------------------------------------------------------- errors


def test_darkmesh_error_is_one_line_exit_2() -> None:
    result = invoke(["status"])  # no node_id configured anywhere
    assert result.exit_code == 2
    assert result.output.startswith("Error: darkmesh-sdl: DARKMESH_NODE_ID ([node] node_id) "
                                    "is required")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_broken_plugin_is_named_with_the_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_dist(tmp_path, "darkmesh-broken-cli", "darkmesh_broken_cli_plugin",
                "raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke(["plugins"], env=_env(load="darkmesh-broken-cli"))
    assert result.exit_code == 2
    assert result.output == (
        "Error: plugin 'darkmesh-broken-cli' failed to load: RuntimeError: boom at import. "
        "Fix or uninstall it, or start without it: "
        "DARKMESH_DISABLE_PLUGINS=darkmesh-broken-cli\n")


def test_registration_hook_that_raises_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_dist(tmp_path, "darkmesh-lazy-cli", "darkmesh_lazy_cli_plugin", """
        from sdl_core import hookimpl

        @hookimpl
        def darkmesh_register_commands():
            from darkmesh_lazy_cli_missing import command
            yield command
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke(["--help"], env=_env(load="darkmesh-lazy-cli"))
    assert result.exit_code == 2
    assert "plugin 'darkmesh-lazy-cli' failed to load: ModuleNotFoundError" in result.output
    assert "DARKMESH_DISABLE_PLUGINS=darkmesh-lazy-cli" in result.output
