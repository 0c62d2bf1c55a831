"""``darkmesh vault status | rotate-key``: operator commands of the built-in vault."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import httpx

from sdl_core.errors import DarkmeshError
from sdl_core.settings import NodeSettings, config_path, load_settings, read_config_file
from sdl_core.vault.store import VaultStore

VAULT_FILE_NAME = "vault.db"


def _node_settings(ctx: click.Context) -> NodeSettings:
    root = ctx.find_root()
    explicit = root.params.get("config")
    tables, _ = read_config_file(config_path(explicit))
    return load_settings(NodeSettings, tables)  # type: ignore[no-any-return]


def open_for(settings: NodeSettings) -> VaultStore:
    """Open the vault the node with ``settings`` uses."""
    passphrase = settings.vault_passphrase.get_secret_value()
    return VaultStore.open(
        Path(settings.data_dir) / VAULT_FILE_NAME,
        key_file=settings.vault_key_file,
        passphrase=passphrase or None,
    )


def _node_is_running(settings: NodeSettings) -> bool:
    try:
        response = httpx.get(f"{settings.listen_url}/darkmesh/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@click.group("vault")
def vault_group() -> None:
    """The node's encrypted vault (store "vault")."""


@vault_group.command("status")
@click.pass_context
def vault_status(ctx: click.Context) -> None:
    """Records per dataset, key source and key version (JSON)."""
    try:
        store = open_for(_node_settings(ctx))
    except DarkmeshError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        click.echo(json.dumps(store.status(), indent=2))
    finally:
        asyncio.run(store.close())


@vault_group.command("rotate-key")
@click.option("--new-passphrase", envvar="DARKMESH_NEW_VAULT_PASSPHRASE", default=None,
              help="New passphrase (passphrase vaults only; env DARKMESH_NEW_VAULT_PASSPHRASE). "
              "Set DARKMESH_VAULT_PASSPHRASE to it before the next start.")
@click.option("--force", is_flag=True,
              help="Rotate even though the node answers on its listen_url.")
@click.pass_context
def rotate_key(ctx: click.Context, new_passphrase: str | None, force: bool) -> None:
    """Re-seal every record under a new key in one transaction.

    Stop the node first: a running node keeps the old key in memory. A key-file vault
    gets a fresh random key written over its key file (mode 0600) after the commit.
    """
    settings = _node_settings(ctx)
    if not force and _node_is_running(settings):
        raise click.ClickException(
            f"the node answers at {settings.listen_url}; stop it first (or pass --force)"
        )
    try:
        store = open_for(settings)
    except DarkmeshError as exc:
        raise click.ClickException(str(exc)) from exc

    async def rotate() -> dict[str, Any]:
        try:
            version = await store.rotate_key(new_passphrase=new_passphrase)
            return {"rotated": True, "key_version": version, "key_source": store.key_source()}
        finally:
            await store.close()

    try:
        result = asyncio.run(rotate())
    except DarkmeshError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2))
