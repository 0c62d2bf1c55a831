"""Keys land where every process looks for them (aauth.md §7.1): ``darkmesh --config F
keygen`` writes into ``keys/`` beside ``F``, and the node, the operator CLI and the
connectors started with the same ``--config F`` find them there, from any working
directory (they used to look in ``./keys`` unless ``DARKMESH_CONFIG`` was set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdl_core import Host
from sdl_core.cli import main
from sdl_core.connectors.common import build_connector_signer, resolve_options
from sdl_core.plugins import make_plugin_manager

PLUGINS = {"darkmesh-sdl.memory-store", "darkmesh-sdl.http", "darkmesh-aauth"}


@pytest.mark.usefixtures("darkmesh_clean_env")
def test_keys_from_keygen_are_found_through_the_same_config(tmp_path: Path) -> None:
    config = tmp_path / "operator" / "darkmesh.toml"
    config.parent.mkdir()
    config.write_text('[node]\nnode_id = "node_k"\nauth_mode = "aauth"\n'
                      'listen_url = "http://127.0.0.1:8123"\n', encoding="utf-8")
    made: dict[str, dict[str, str]] = {}
    runner = CliRunner()
    for name, extra in (("node", []), ("operator", ["--operator"]),
                        ("connector-csv-contacts", ["--connector", "csv-contacts"])):
        result = runner.invoke(main, ["--config", str(config), "keygen", *extra],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        made[name] = json.loads(result.stdout)
        assert Path(made[name]["private_file"]).parent == config.parent / "keys"
    assert not Path("keys").exists()  # nothing in the working directory

    pm = make_plugin_manager(only=PLUGINS, environ={})
    host = Host.create(config=config, pm=pm)
    signer = host.build_signer()
    assert signer is not None and signer.has_role("operator")
    operator = signer.identity("operator")
    assert (operator.sub, operator.thumbprint) == ("darkmesh-operator@node_k",
                                                   made["operator"]["thumbprint"])

    options = resolve_options(url=None, timeout=5, dry_run=False, quiet=True, auth_mode=None,
                              node_key=None, aauth_private_jwk=None, aauth_sub=None,
                              aauth_iss=None, config=str(config))
    connector_signer = build_connector_signer(options, pm=pm)
    assert connector_signer is not None
    connector = connector_signer.identity("connector:csv-contacts")
    assert (connector.sub, connector.thumbprint) == (
        "connector-csv-contacts@node_k", made["connector-csv-contacts"]["thumbprint"])
    assert not connector_signer.has_role("connector:csv-interactions")  # never generated
