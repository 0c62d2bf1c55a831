"""Migration from upstream v1: the JSON config mapping (DESIGN.md §11) and the Fernet vault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from sdl_core import ConfigError, Host, NodeSettings, make_plugin_manager
from sdl_core.default_plugins.memory_store import MemoryStore
from sdl_core.settings import load_settings, read_config_file
from sdl_core.upstream import import_upstream_vault, tables_from_upstream_json
from sdl_core.vault import UpstreamVaultError, VaultStore, read_upstream_dataset

UPSTREAM_NODE_A = {
    "node_id": "node_a",
    "pseudonym_id": "p_node_a",
    "port": 8001,
    "listen_url": "http://localhost:8001",
    "vault_path": "./vault_a",
    "self_identifiers": ["founder@startup.com"],
    "capabilities": ["warm_intro_v1"],
    "required_integrations": ["contacts", "interactions"],
    "relay_url": "http://localhost:9000",
    "relay_key": "demo-relay-key",
    "node_key": "demo-relay-key",
    "auth_mode": "either",
    "response_wait_seconds": 5.0,
    "post_ttl_seconds": 30,
    "warm_intro_session_ttl": 900,
    "reveal_token_ttl_seconds": 900,
    "dev_mode": False,
    "trusted_agents_file": "config/trusted_agents.json",
    "neotoma_url": "http://localhost:3180",
    "neotoma_token": "nt-secret",
    "neotoma_entity_type": "contact",
    "neotoma_max_entities": 2000,
    "neotoma_cache_ttl_seconds": 15,
    "neotoma_read_auth_mode": "auto",
}


def mapped(config: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    return tables_from_upstream_json(json.dumps(config).encode(), source="node_a.json")


# --------------------------------------------------------------------- mapping


def test_full_upstream_config_maps_exactly() -> None:
    tables, warnings = mapped(UPSTREAM_NODE_A)
    assert tables == {
        "node": {
            "node_id": "node_a", "pseudonym_id": "p_node_a", "port": 8001,
            "listen_url": "http://localhost:8001", "data_dir": "./vault_a",
            "self_identifiers": ["founder@startup.com"], "capabilities": ["warm_intro_v1"],
            "required_integrations": ["contacts", "interactions"],
            "relay_url": "http://localhost:9000", "relay_key": "demo-relay-key",
            "auth_mode": "either", "node_key": "demo-relay-key", "peer_key": "demo-relay-key",
        },
        "warm_intro": {
            "response_wait_seconds": 5.0, "post_ttl_seconds": 30,
            "warm_intro_session_ttl": 900, "reveal_token_ttl_seconds": 900,
            "v1_trust_message_urls": True,
        },
        "aauth": {"trusted_agents_file": "config/trusted_agents.json"},
        "neotoma": {"url": "http://localhost:3180", "token": "nt-secret",
                    "entity_type": "contact", "max_entities": 2000, "cache_ttl_seconds": 15,
                    "read_auth_mode": "auto"},
    }
    assert len(warnings) == 2
    assert any("dev_mode is dropped" in w for w in warnings)
    assert any("v1_trust_message_urls = true" in w and "URLs taken from v1 messages" in w
               for w in warnings)
    assert all("node_a.json" in w for w in warnings)


def test_node_key_becomes_node_key_and_peer_key() -> None:
    tables, _ = mapped({"node_id": "n", "node_key": "op-key", "relay_key": "relay-key"})
    assert tables["node"]["node_key"] == "op-key"
    assert tables["node"]["peer_key"] == "op-key"
    assert tables["node"]["relay_key"] == "relay-key"


@pytest.mark.parametrize("config", [
    {"node_id": "n", "relay_key": "relay-key"},
    {"node_id": "n", "relay_key": "relay-key", "node_key": ""},
    {"node_id": "n", "relay_key": "relay-key", "node_key": None},
])
def test_without_node_key_peer_key_takes_relay_key_and_node_key_is_not_defaulted(
    config: dict[str, Any]
) -> None:
    tables, warnings = mapped(config)
    assert tables["node"]["peer_key"] == "relay-key"
    assert "node_key" not in tables["node"]
    assert any("no node_key" in w and "not defaulted" in w for w in warnings)


def test_no_key_at_all() -> None:
    tables, _ = mapped({"node_id": "n"})
    assert "peer_key" not in tables["node"] and "node_key" not in tables["node"]
    assert tables["warm_intro"] == {"v1_trust_message_urls": True}


def test_trust_message_urls_is_always_set_with_a_warning() -> None:
    tables, warnings = mapped({"node_id": "n", "node_key": "k"})
    assert tables["warm_intro"]["v1_trust_message_urls"] is True
    assert [w for w in warnings if "v1_trust_message_urls" in w]


def test_unknown_and_unmapped_neotoma_fields_are_warned() -> None:
    tables, warnings = mapped({"node_id": "n", "node_key": "k", "colour": "blue",
                               "neotoma_flavour": "x", "neotoma_url": ""})
    assert tables["neotoma"] == {"url": ""}
    assert "colour" not in tables["node"]
    assert any("unknown field 'colour' is ignored" in w for w in warnings)
    assert any("unknown field 'neotoma_flavour' is ignored" in w for w in warnings)


def test_no_plugin_tables_when_no_plugin_fields() -> None:
    tables, _ = mapped({"node_id": "n", "node_key": "k"})
    assert set(tables) == {"node", "warm_intro"}


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "is not valid JSON (line 1, column 2"),
    (b"[1, 2]", "must be a JSON object of node settings, not a JSON list"),
    (b'"node_a"', "not a JSON str"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
])
def test_bad_upstream_config_is_a_config_error(raw: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=r"upstream config node_a\.json") as info:
        tables_from_upstream_json(raw, source="node_a.json")
    assert message in str(info.value)


def test_json_config_file_loads_into_node_settings(tmp_path: Path) -> None:
    path = tmp_path / "node_a.json"
    path.write_text(json.dumps(UPSTREAM_NODE_A))
    tables, warnings = read_config_file(path)
    settings = load_settings(NodeSettings, tables)
    assert settings.node_id == "node_a"
    assert settings.data_dir == Path("./vault_a")
    assert settings.node_key.get_secret_value() == "demo-relay-key"
    assert settings.peer_key.get_secret_value() == "demo-relay-key"
    assert settings.relay_key.get_secret_value() == "demo-relay-key"
    assert settings.self_identifiers == ["founder@startup.com"]
    assert settings.capabilities == ["warm_intro_v1"]
    assert warnings


def test_host_create_reports_upstream_warnings(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DARKMESH_NODE_KEY", raising=False)
    path = tmp_path / "node_b.json"
    path.write_text(json.dumps({"node_id": "node_b", "relay_key": "rk", "dev_mode": True}))
    host = Host.create(config=path, pm=make_plugin_manager(only=set()))
    assert host.settings.node_id == "node_b"
    assert host.settings.peer_key.get_secret_value() == "rk"
    assert host.settings.node_key.get_secret_value() == ""
    assert any("dev_mode is dropped" in w for w in host.config_warnings)
    # warm_intro is not installed in this manager: its table is reported, not fatal.
    assert any("[warm_intro]" in w for w in host.config_warnings)


# ---------------------------------------------------------------- fernet vault


CONTACTS = [
    {"name": "Casey Connector", "email": "casey@connector.com", "org": "Connector LLC",
     "role": "Advisor", "strength": 0.85},
    {"name": "Blake Builder", "email": "blake@otherco.com", "org": "OtherCo",
     "role": "Engineer", "strength": 0.4},
    {"name": "No Email", "email": "", "org": "Acme", "role": "CEO"},
]
INTERACTIONS = [{"email": "casey@connector.com", "strength": 0.92},
                {"email": "blake@otherco.com", "strength": 0.35},
                {"email": "casey@connector.com", "strength": 0.95}]


def upstream_vault(path: Path, datasets: dict[str, Any], key: bytes | None = None) -> bytes:
    """Write a vault the way upstream v1 does: vault.key + <dataset>.enc Fernet tokens."""
    path.mkdir(parents=True, exist_ok=True)
    key = key or Fernet.generate_key()
    (path / "vault.key").write_bytes(key)
    for name, records in datasets.items():
        (path / f"{name}.enc").write_bytes(Fernet(key).encrypt(json.dumps(records).encode()))
    return key


@pytest.mark.asyncio
async def test_import_round_trip_into_the_vault(tmp_path: Path) -> None:
    source = tmp_path / "vault_a"
    upstream_vault(source, {"contacts": CONTACTS, "interactions": INTERACTIONS,
                            "writer_activity": [{"id": "w1", "words": 300}]})
    store = VaultStore.open(tmp_path / "data" / "vault.db", key_file=tmp_path / "keys" / "k")
    counts = await import_upstream_vault(source, store)
    # Interactions are keyed by email: the last one wins, as in v1.
    assert counts == {"contacts": 3, "interactions": 2, "writer_activity": 1}
    assert [r async for r in store.iterate("contacts")] == CONTACTS
    assert [r async for r in store.iterate("interactions")] == [
        {"email": "casey@connector.com", "strength": 0.95},
        {"email": "blake@otherco.com", "strength": 0.35},
    ]
    assert [r async for r in store.iterate("writer_activity")] == [{"id": "w1", "words": 300}]
    # Importing again updates instead of duplicating.
    assert await import_upstream_vault(source, store) == counts
    await store.close()


@pytest.mark.asyncio
async def test_wrong_key_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "vault"
    upstream_vault(source, {"contacts": CONTACTS, "interactions": INTERACTIONS})
    # interactions.enc re-encrypted under another key: the whole import must refuse.
    (source / "interactions.enc").write_bytes(
        Fernet(Fernet.generate_key()).encrypt(json.dumps(INTERACTIONS).encode()))
    store = MemoryStore()
    with pytest.raises(UpstreamVaultError, match=r"interactions.enc with .*vault.key: wrong key "
                                                 r"or corrupt file"):
        await import_upstream_vault(source, store)
    assert await store.count("contacts") == 0


@pytest.mark.parametrize("content, message", [
    (b"garbage-not-a-token", "wrong key or corrupt file"),
])
def test_corrupt_enc_file(tmp_path: Path, content: bytes, message: str) -> None:
    upstream_vault(tmp_path, {})
    (tmp_path / "contacts.enc").write_bytes(content)
    with pytest.raises(UpstreamVaultError, match=message):
        read_upstream_dataset(tmp_path, "contacts")


@pytest.mark.parametrize("payload, message", [
    (b"{\"not\": \"a list\"}", "holds a JSON dict, not a list of records"),
    (b"[1, 2]", "record #0 is a int, not an object"),
    (b"\x00\x01binary", "does not hold JSON"),
])
def test_enc_content_must_be_a_list_of_objects(tmp_path: Path, payload: bytes,
                                                message: str) -> None:
    key = upstream_vault(tmp_path, {})
    (tmp_path / "contacts.enc").write_bytes(Fernet(key).encrypt(payload))
    with pytest.raises(UpstreamVaultError, match=message):
        read_upstream_dataset(tmp_path, "contacts")


def test_missing_key_and_directory(tmp_path: Path) -> None:
    (tmp_path / "contacts.enc").write_bytes(b"x")
    with pytest.raises(UpstreamVaultError, match=r"vault\.key not found"):
        read_upstream_dataset(tmp_path, "contacts")
    (tmp_path / "vault.key").write_bytes(b"short")
    with pytest.raises(UpstreamVaultError, match="is not a Fernet key"):
        read_upstream_dataset(tmp_path, "contacts")


@pytest.mark.asyncio
async def test_missing_directory_and_empty_vault(tmp_path: Path) -> None:
    with pytest.raises(UpstreamVaultError, match="does not exist"):
        await import_upstream_vault(tmp_path / "nope", MemoryStore())
    upstream_vault(tmp_path / "empty", {})
    assert await import_upstream_vault(tmp_path / "empty", MemoryStore()) == {}
    assert read_upstream_dataset(tmp_path / "empty", "contacts") == []
