"""``darkmesh keygen`` and ``darkmesh trust add|list|remove`` (``aauth.md`` §7).

Every command prints one JSON object on stdout; warnings and prompts go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from darkmesh_aauth.keys import (
    JWKError,
    generate_jwk,
    public_jwk,
    thumbprint,
    write_new_file,
)
from darkmesh_aauth.pairing import PairingError, fetch_peer_key
from darkmesh_aauth.registry import (
    DEFAULT_ISS,
    RegistryError,
    TrustRegistry,
    editable_document,
    remove_entries,
    upsert_entry,
    write_registry,
)
from darkmesh_aauth.runtime import with_key_dir
from darkmesh_aauth.settings import AAuthSettings
from darkmesh_aauth.signer import CONNECTOR_NAME
from sdl_core import DarkmeshError, Host, PluginSettingsError, RelayHost

# ------------------------------------------------------------------ context


@dataclass(frozen=True, kw_only=True)
class CLIContext:
    """What the commands need from the loaded settings."""

    settings: AAuthSettings
    node_id: str | None
    config: Path | None
    capabilities: frozenset[str]


def _config_option(ctx: click.Context, config: str | None) -> Path | None:
    if config:
        return Path(config)
    root = ctx.find_root()
    inherited = root.params.get("config") if root is not ctx else None
    if inherited:
        return Path(str(inherited))
    obj = root.obj
    found = getattr(obj, "config", None) if obj is not None else None
    return Path(str(found)) if found else None


def load_context(ctx: click.Context, config: str | None) -> CLIContext:
    """Settings from the settings file and environment: a node's if ``node_id`` is set,
    else a relay's (which needs none)."""
    path = _config_option(ctx, config)
    runtime: Host | RelayHost
    node_id: str | None
    try:
        runtime = Host.create(config=path)
        node_id = runtime.settings.node_id
    except PluginSettingsError:
        try:
            runtime = RelayHost.create(config=path)
        except DarkmeshError as exc:
            raise click.ClickException(str(exc)) from None
        node_id = None
    except DarkmeshError as exc:  # a broken plugin or settings file stops the command, named
        raise click.ClickException(str(exc)) from None
    try:
        settings = runtime.plugin_settings(AAuthSettings, plugin="darkmesh-aauth")
    except PluginSettingsError as exc:
        raise click.ClickException(str(exc)) from None
    settings = with_key_dir(runtime, settings)
    return CLIContext(settings=settings, node_id=node_id, config=path,
                      capabilities=frozenset(runtime.capability_names()))


def emit(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


# ------------------------------------------------------------------- keygen


@click.command("keygen")
@click.option("--alg", type=click.Choice(["Ed25519", "ES256"]), default="Ed25519",
              show_default=True, help="key algorithm")
@click.option("--connector", "connector", metavar="NAME", help="a connector's key "
              "(connector-NAME); connectors get node.ingest only")
@click.option("--operator", is_flag=True, help="the operator CLI's key")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="directory (default DARKMESH_AAUTH_KEY_DIR, else keys/ beside the "
              "settings file)")
@click.option("--force", is_flag=True, help="overwrite an existing private key")
@click.option("--config", "config", metavar="PATH", help="settings file")
@click.pass_context
def keygen(ctx: click.Context, alg: str, connector: str | None, operator: bool,
           out: Path | None, force: bool, config: str | None) -> None:
    """Create <name>.private.jwk (mode 0600) and <name>.public.jwk."""
    if connector is not None and operator:
        raise click.UsageError("pass --connector NAME or --operator, not both")
    if connector is not None and not CONNECTOR_NAME.match(connector):
        raise click.UsageError(f"--connector: invalid name {connector!r} (lower-case letters, "
                               "digits, - and _)")
    context = load_context(ctx, config)
    settings = context.settings
    tag = context.node_id or settings.operator or "local"
    if connector is not None:
        name, sub = f"connector-{connector}", f"connector-{connector}@{tag}"
    elif operator:
        name, sub = "operator", f"darkmesh-operator@{tag}"
    else:
        name = "node"
        sub = settings.sub or (f"darkmesh-node@{context.node_id}" if context.node_id else "")
    directory = out or settings.resolved_key_dir()
    private_path = directory / f"{name}.private.jwk"
    public_path = directory / f"{name}.public.jwk"
    if private_path.exists() and not force:
        fail(f"{private_path} exists; pass --force to replace it (the old key stops working "
             "once removed from the registries that trust it)")
    jwk = generate_jwk(alg)  # type: ignore[arg-type]
    public = public_jwk(jwk) | {"kid": jwk["kid"]}
    created_dir = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if created_dir:
        directory.chmod(0o700)
    try:
        write_new_file(private_path, (json.dumps(jwk, indent=2) + "\n").encode(), mode=0o600,
                       force=force)
    except FileExistsError:
        fail(f"{private_path} exists; pass --force to replace it")
    write_new_file(public_path, (json.dumps(public, indent=2) + "\n").encode(), mode=0o644,
                   force=True)
    result: dict[str, Any] = {
        "name": name, "alg": alg, "private_file": str(private_path),
        "public_file": str(public_path), "thumbprint": jwk["kid"], "sub": sub or None,
        "public_jwk": public,
    }
    if name == "node":
        result["next"] = (f"set DARKMESH_AAUTH_PRIVATE_JWK_PATH={private_path}; peers trust it "
                          f"with `darkmesh trust add --public-jwk {public_path} "
                          f"--sub {sub or '…'}`")
    elif connector is not None:
        result["next"] = (f"trust it on the node with `darkmesh trust add --public-jwk "
                          f"{public_path} --sub {sub} --capabilities node.ingest`")
    else:
        result["next"] = (f"trust it on the node with `darkmesh trust add --public-jwk "
                          f"{public_path} --sub {sub} --capabilities "
                          "node.query,node.consent,node.approve,node.ingest`")
    emit(result)


# -------------------------------------------------------------------- trust


@click.group("trust")
def trust() -> None:
    """Manage the trust registry (DARKMESH_TRUSTED_AGENTS_FILE)."""


def _registry_file(context: CLIContext, given: Path | None, relay: bool) -> Path:
    if given is not None:
        return given
    s = context.settings
    order = [s.relay_trusted_agents_file, s.trusted_agents_file] if relay else \
        [s.trusted_agents_file, s.relay_trusted_agents_file]
    for candidate in order:
        if candidate is not None:
            return candidate
    raise click.UsageError("no trust registry configured: pass --file, or set "
                           "DARKMESH_TRUSTED_AGENTS_FILE (relay: "
                           "DARKMESH_RELAY_TRUSTED_AGENTS_FILE)")


def _load_document(path: Path, known: Iterable[str]) -> dict[str, Any]:
    try:
        return editable_document(path, known)
    except RegistryError as exc:
        fail(f"refusing to change {path}: {exc}")


def _parse_capabilities(value: str | None, known: frozenset[str]) -> list[str] | None:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [n for n in names if n != "*" and n not in known]
    if unknown:
        raise click.UsageError(
            f"--capabilities: unknown {', '.join(unknown)}; choose from: "
            f"{', '.join(sorted(known))} (or *)"
        )
    if "*" in names:
        warn("capability '*' grants every capability, present and future")
    return list(dict.fromkeys(names))


@trust.command("add")
@click.option("--public-jwk", "public_jwk_path", type=click.Path(dir_okay=False, path_type=Path),
              help="a public JWK file (.public.jwk)")
@click.option("--from-url", "from_url", metavar="URL",
              help="a peer node's base URL: reads /.well-known/jwks.json and /darkmesh/health")
@click.option("--sub", help="the agent id (--from-url default darkmesh-node@<node_id>)")
@click.option("--iss", help=f"the pinned issuer (default {DEFAULT_ISS}; * for any)")
@click.option("--capabilities", help="comma-separated capability names (default none)")
@click.option("--label", help="a label (default: the sub)")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="registry file (default: this process's registry)")
@click.option("--relay", is_flag=True, help="default to the relay's registry")
@click.option("--dry-run", is_flag=True, help="print what would change; write nothing")
@click.option("--expect-thumbprint", metavar="T", help="refuse unless the key has this "
              "thumbprint (skips the confirmation prompt)")
@click.option("--kid", help="with --from-url: pick this key of the JWKS")
@click.option("--config", "config", metavar="PATH", help="settings file")
@click.pass_context
def trust_add(ctx: click.Context, public_jwk_path: Path | None, from_url: str | None,
              sub: str | None, iss: str | None, capabilities: str | None, label: str | None,
              file: Path | None, relay: bool, dry_run: bool, expect_thumbprint: str | None,
              kid: str | None, config: str | None) -> None:
    """Trust a public key (idempotent by thumbprint: noop, update or append)."""
    if (public_jwk_path is None) == (from_url is None):
        raise click.UsageError("pass exactly one of --public-jwk PATH or --from-url URL")
    context = load_context(ctx, config)
    caps = _parse_capabilities(capabilities, context.capabilities)
    if public_jwk_path is not None:
        from darkmesh_aauth.keys import load_public_key_file

        try:
            public = load_public_key_file(public_jwk_path)
        except JWKError as exc:
            fail(f"--public-jwk: {exc}")
        if not sub:
            raise click.UsageError("--sub is required with --public-jwk (e.g. "
                                   "darkmesh-node@<node_id>)")
        tp = thumbprint(public)
        if expect_thumbprint is not None and expect_thumbprint != tp:
            fail(f"--expect-thumbprint: the key's thumbprint is {tp}, not {expect_thumbprint}")
    else:
        assert from_url is not None
        try:
            peer = fetch_peer_key(from_url, kid=kid)
        except PairingError as exc:
            fail(f"--from-url: {exc}")
        public, tp = peer.public_jwk, peer.thumbprint
        sub = sub or f"darkmesh-node@{peer.node_id}"
        click.echo(f"{from_url}: node {peer.node_id!r}, key thumbprint {tp}", err=True)
        if expect_thumbprint is not None:
            if expect_thumbprint != tp:
                fail(f"--expect-thumbprint: {from_url} serves key {tp}, not "
                     f"{expect_thumbprint}; do not trust it until its operator confirms")
        elif not dry_run:
            click.confirm(f"Check {tp} with the operator of {peer.node_id!r} out of band. "
                          "Trust this key?", abort=True, err=True)
    path = _registry_file(context, file, relay)
    document = _load_document(path, context.capabilities)
    try:
        action, entry = upsert_entry(document, context.capabilities, public=public, sub=sub,
                                     iss=iss, capabilities=caps, label=label)
    except RegistryError as exc:
        fail(f"the result would be invalid: {exc}")
    agents: list[dict[str, Any]] = document["agents"]
    if dry_run:
        emit({"file": str(path), "thumbprint": tp, "action": action, "entry": entry,
              "total_entries_after": len(agents)})
        return
    if action != "noop":
        write_registry(path, document)
    emit({"file": str(path), "thumbprint": tp, "action": action, "sub": entry["sub"],
          "iss": entry.get("iss"), "capabilities": entry["capabilities"],
          "total_entries": len(agents)})


@trust.command("list")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="check this registry file instead of the configured one")
@click.option("--relay", is_flag=True, help="default to the relay's registry")
@click.option("--config", "config", metavar="PATH", help="settings file")
@click.pass_context
def trust_list(ctx: click.Context, file: Path | None, relay: bool, config: str | None) -> None:
    """List entries and the registry's health ({path, loaded_at, last_error})."""
    context = load_context(ctx, config)
    path = _registry_file(context, file, relay)
    registry = TrustRegistry(path, known_capabilities=context.capabilities)
    status = registry.status()
    entries = [
        {"label": e.label, "thumbprint": e.thumbprint, "sub": e.sub, "iss": e.iss or "*",
         "capabilities": sorted(e.capabilities), "alg": e.public_jwk.get("alg")}
        for e in registry.snapshot.entries
    ]
    emit({"path": status["path"], "entries": entries, "loaded_at": status["loaded_at"],
          "last_error": status["last_error"], "warnings": status["warnings"]})
    if status["last_error"] is not None:
        sys.exit(1)


@trust.command("remove")
@click.argument("thumbprint_arg", metavar="THUMBPRINT", required=False)
@click.option("--sub", help="remove every entry of this sub")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="registry file (default: this process's registry)")
@click.option("--relay", is_flag=True, help="default to the relay's registry")
@click.option("--dry-run", is_flag=True, help="print what would change; write nothing")
@click.option("--config", "config", metavar="PATH", help="settings file")
@click.pass_context
def trust_remove(ctx: click.Context, thumbprint_arg: str | None, sub: str | None,
                 file: Path | None, relay: bool, dry_run: bool, config: str | None) -> None:
    """Revoke a key (by thumbprint) or every key of a sub; effective on the next request."""
    if (thumbprint_arg is None) == (sub is None):
        raise click.UsageError("pass a THUMBPRINT or --sub SUB, not both")
    context = load_context(ctx, config)
    path = _registry_file(context, file, relay)
    if not path.exists():
        fail(f"{path} does not exist")
    document = _load_document(path, context.capabilities)
    removed = remove_entries(document, thumbprint_value=thumbprint_arg, sub=sub)
    keep: list[dict[str, Any]] = document["agents"]
    action = "remove" if removed else "noop"
    result: dict[str, Any] = {"file": str(path), "action": action,
                              "removed": [a.get("thumbprint") for a in removed]}
    if dry_run:
        result["total_entries_after"] = len(keep)
        emit(result)
        return
    if removed:
        write_registry(path, document)
    result["total_entries"] = len(keep)
    emit(result)
