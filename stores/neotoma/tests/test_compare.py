"""``darkmesh neotoma compare``: the vault and the live store side by side."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from click.testing import CliRunner
from darkmesh_neotoma.cli import neotoma
from darkmesh_neotoma.compare import compare, effective
from standin import StandinServer


def test_effective_strength_rules() -> None:
    rows = effective(
        [{"email": "a@x.com", "name": "A", "strength": 0.2},
         {"email": "b@x.com", "name": "B"},
         {"email": "c@x.com", "name": "C", "strength": 0.9}],
        [{"email": "A@x.com", "strength": 0.7}],
    )
    assert rows["a@x.com"]["strength"] == 0.7 and rows["a@x.com"]["strength_source"] == (
        "interactions")
    assert rows["b@x.com"]["strength"] == 0.5 and rows["b@x.com"]["strength_source"] == (
        "default")
    assert rows["c@x.com"]["strength_source"] == "contact"


def test_compare_rows_and_summary() -> None:
    vault = effective([{"email": "both@x.com", "name": "Both", "org": "Old", "strength": 0.5},
                       {"email": "vault@x.com", "name": "V"}], [])
    live = effective([{"email": "both@x.com", "name": "Both", "org": "New", "strength": 0.6},
                      {"email": "live@x.com", "name": "L", "strength": 0.1}], [])
    result = compare(vault, live)
    assert result["summary"] == {"both": 1, "vault_only": 1, "neotoma_only": 1,
                                 "strength_differs": 1, "fields_differ": 1}
    both = next(r for r in result["rows"] if r["identity"] == "both@x.com")
    assert both["fields_differ"] == ["org"] and both["strength_delta"] == 0.1
    only = compare(vault, live, email="VAULT@x.com")
    assert [r["identity"] for r in only["rows"]] == ["vault@x.com"]
    down = compare(vault, None)
    assert down["neotoma_reachable"] is False and down["summary"]["vault_only"] == 2


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "darkmesh.toml"
    path.write_text(
        "[node]\nnode_id = \"node_b\"\nstore = \"neotoma\"\nauth_mode = \"hmac\"\n"
        f"node_key = \"k-0123456789\"\ndata_dir = \"{tmp_path / 'data'}\"\n"
        f"vault_key_file = \"{tmp_path / 'vault.key'}\"\n"
        f"[neotoma]\nurl = \"{url}\"\nfallback_store = \"vault\"\n"
    )
    return path


def seed_vault(config: Path) -> None:
    from sdl_core import Host

    async def run() -> None:
        host = Host.create(config=config)
        host.prepare()
        await host.store.upsert("contacts", [
            {"email": "taylor@companyx.com", "name": "Taylor", "org": "Company X",
             "strength": 0.9},
            {"email": "vault-only@x.com", "name": "Vault Only"}])
        await host.store.upsert("interactions", [{"email": "taylor@companyx.com",
                                                  "strength": 0.95}])
        await host.stop()

    asyncio.run(run())


def test_cli_compare_against_the_vault(standin: StandinServer, tmp_path: Path) -> None:
    response = httpx.post(standin.url + "/store", json={"idempotency_key": "s", "entities": [
        {"entity_type": "contact", "name": "Taylor BD", "email": "taylor@companyx.com",
         "organization": "Company X", "title": "Business Development"},
        {"entity_type": "contact", "name": "Neo Only", "email": "neo@x.com"}]})
    assert response.status_code == 200
    config = write_config(tmp_path, standin.url)
    seed_vault(config)
    result = CliRunner().invoke(neotoma, ["--config", str(config), "compare"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["neotoma_reachable"] is True and out["fallback_store"] == "vault"
    assert out["summary"]["both"] == 1 and out["summary"]["vault_only"] == 1
    assert out["summary"]["neotoma_only"] == 1
    taylor = next(r for r in out["rows"] if r["identity"] == "taylor@companyx.com")
    assert taylor["vault"]["strength"] == 0.95
    assert taylor["neotoma"]["fields"]["role"] == "Business Development"
    assert "role" in taylor["fields_differ"] and "name" in taylor["fields_differ"]
    one = CliRunner().invoke(neotoma, ["--config", str(config), "compare", "--email",
                                       "neo@x.com"])
    assert [r["identity"] for r in json.loads(one.stdout)["rows"]] == ["neo@x.com"]
    standin.stop()
    down = CliRunner().invoke(neotoma, ["--config", str(config), "compare"])
    assert down.exit_code == 0
    out = json.loads(down.stdout)
    assert out["neotoma_reachable"] is False and out["neotoma_error"]
    assert out["summary"]["vault_only"] == 2
