"""Migration from upstream Darkmesh v1: its JSON node config and its Fernet vault.

:func:`tables_from_upstream_json` maps a ``config/node_a.json`` object
(``spec/wire-v1.md`` §1) onto Darkmesh settings tables, exactly as DESIGN.md §11
("Settings") says; :func:`sdl_core.settings.read_config_file` calls it for ``.json``
files. :func:`import_upstream_vault` copies the ``.enc`` datasets into a store; only
``darkmesh init --from-upstream`` calls it (a running node never reads ``.enc`` files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdl_core.errors import ConfigError
from sdl_core.protocols import Store
from sdl_core.vault.fernet import load_fernet, read_upstream_dataset, upstream_datasets

#: Upstream fields the core node takes under the same name.
NODE_FIELDS = (
    "node_id",
    "port",
    "listen_url",
    "self_identifiers",
    "pseudonym_id",
    "capabilities",
    "required_integrations",
    "relay_url",
    "relay_key",
    "auth_mode",
)

#: Upstream fields of the warm-intro skill, same names under ``[warm_intro]``.
WARM_INTRO_FIELDS = (
    "response_wait_seconds",
    "post_ttl_seconds",
    "warm_intro_session_ttl",
    "reveal_token_ttl_seconds",
)

#: Upstream fields of ``darkmesh-aauth``, same names under ``[aauth]``.
AAUTH_FIELDS = ("trusted_agents_file",)

#: ``neotoma_<x>`` becomes ``[neotoma] <x>`` for these ``<x>``.
NEOTOMA_FIELDS = (
    "url",
    "token",
    "entity_type",
    "max_entities",
    "cache_ttl_seconds",
    "read_auth_mode",
)

_NEOTOMA_PREFIX = "neotoma_"


def _present(value: Any) -> bool:
    """Upstream writes ``""`` for an unset secret; that is no key at all."""
    return value is not None and value != ""


def tables_from_upstream_json(
    raw: bytes, source: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Map an upstream JSON node config to settings tables; return ``(tables, warnings)``.

    The tables are ``node``, ``warm_intro``, ``aauth`` and ``neotoma`` (empty ones left
    out except ``warm_intro``, which always carries ``v1_trust_message_urls``):

    * core fields keep their names; ``vault_path`` becomes ``data_dir``;
    * one shared key: ``node_key`` becomes both ``node_key`` and ``peer_key``; without a
      ``node_key``, ``peer_key`` takes ``relay_key`` (what upstream peers send) and the
      operator key is *not* defaulted;
    * ``warm_intro.v1_trust_message_urls`` is set (an upstream config has no peer list),
      with a warning;
    * ``neotoma_<x>`` becomes ``neotoma.<x>``; ``trusted_agents_file`` goes to ``aauth``;
    * ``dev_mode`` and unknown fields are dropped with a warning.

    :raises ConfigError: ``raw`` is not a UTF-8 JSON object.
    """
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"upstream config {source} is not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"upstream config {source} is not valid JSON (line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"upstream config {source} must be a JSON object of node settings, "
            f"not a JSON {type(data).__name__}"
        )

    node: dict[str, Any] = {}
    warm_intro: dict[str, Any] = {}
    aauth: dict[str, Any] = {}
    neotoma: dict[str, Any] = {}
    warnings: list[str] = []

    for name, value in data.items():
        if name in NODE_FIELDS:
            node[name] = value
        elif name == "vault_path":
            node["data_dir"] = value
        elif name == "node_key":
            continue  # handled below, with relay_key
        elif name in WARM_INTRO_FIELDS:
            warm_intro[name] = value
        elif name in AAUTH_FIELDS:
            aauth[name] = value
        elif name.startswith(_NEOTOMA_PREFIX) and name[len(_NEOTOMA_PREFIX):] in NEOTOMA_FIELDS:
            neotoma[name[len(_NEOTOMA_PREFIX):]] = value
        elif name == "dev_mode":
            warnings.append(
                f"upstream config {source}: dev_mode is dropped; Darkmesh has no dev mode "
                "(use the memory store and loopback addresses for local testing)"
            )
        else:
            warnings.append(f"upstream config {source}: unknown field {name!r} is ignored")

    node_key = data.get("node_key")
    relay_key = data.get("relay_key")
    if _present(node_key):
        node["node_key"] = node_key
        node["peer_key"] = node_key
    else:
        if _present(relay_key):
            node["peer_key"] = relay_key
        warnings.append(
            f"upstream config {source} has no node_key: the operator key is not defaulted to "
            "relay_key; set DARKMESH_NODE_KEY (or use AAuth) to reach the operator routes"
        )

    warm_intro["v1_trust_message_urls"] = True
    warnings.append(
        f"upstream config {source} has no peer list: the peer key is sent to http(s) URLs "
        "taken from v1 messages, as upstream does (warm_intro.v1_trust_message_urls = true); "
        "move to a TOML config with [[node.peers]] to send it only to configured peers"
    )

    tables: dict[str, dict[str, Any]] = {"node": node, "warm_intro": warm_intro}
    if aauth:
        tables["aauth"] = aauth
    if neotoma:
        tables["neotoma"] = neotoma
    return tables, warnings


async def import_upstream_vault(vault_path: str | Path, store: Store) -> dict[str, int]:
    """Copy every ``<vault_path>/<dataset>.enc`` into ``store`` (one upsert per dataset).

    ``contacts`` and ``interactions`` come first, then any other dataset found. Records
    keep their upstream order; re-importing updates instead of duplicating (the store
    keys records, see :func:`sdl_core.record_key`). Every file is decrypted and parsed
    before anything is written, so a wrong key or a corrupt file writes nothing.

    :returns: dataset name → records in the store after the import.
    :raises sdl_core.vault.UpstreamVaultError: missing directory or key, wrong key,
        corrupt or non-list content, naming the file.
    """
    found = upstream_datasets(vault_path)
    order: list[str] = [d for d in ("contacts", "interactions") if d in found]
    order += [d for d in found if d not in order]
    if not order:
        return {}
    fernet = load_fernet(vault_path)
    loaded = {dataset: read_upstream_dataset(vault_path, dataset, fernet) for dataset in order}
    return {dataset: await store.upsert(dataset, records) for dataset, records in loaded.items()}
