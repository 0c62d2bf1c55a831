"""CLI: ``darkmesh neotoma grants provision|list``, ``darkmesh neotoma compare``,
``darkmesh neotoma probe`` and the ``darkmesh ingest neotoma`` connector.

Each command builds a node :class:`sdl_core.Host` for its settings and signer, without
starting servers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import click

from darkmesh_neotoma.client import NeotomaClient, NeotomaError, NeotomaUnavailable
from darkmesh_neotoma.compare import compare, effective
from darkmesh_neotoma.grants import EXIT_ERROR, Provisioner, ProvisionError
from darkmesh_neotoma.probe import probe
from darkmesh_neotoma.runtime import PLUGIN, STATE_FEATURE, settings_for
from darkmesh_neotoma.settings import NeotomaSettings
from darkmesh_neotoma.store import NeotomaStore
from darkmesh_neotoma.sync import (
    CONNECTOR_NAME,
    DEFAULT_MAX_CONTACTS,
    DEFAULT_MIN_STRENGTH,
    plan_sync,
)
from sdl_core import (
    AgentIdentity,
    ConnectorOptions,
    ConnectorRuntime,
    DarkmeshError,
    Host,
    IngestClient,
    IngestError,
    Signer,
    connector_options,
    make_plugin_manager,
    prepare_auth,
    progress_bar,
)

T = TypeVar("T")
DRY_RUN_TOP = 10


def _config(ctx: click.Context) -> str | None:
    own = ctx.find_object(_GroupConfig)
    if own is not None and own.path:
        return own.path
    value = ctx.find_root().params.get("config")
    return str(value) if value else None


class _GroupConfig:
    """``darkmesh neotoma --config``, handed to the sub-commands."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path


def load_host(ctx: click.Context) -> Host:
    """A node host for settings and signer; nothing is started."""
    try:
        host = Host.create(config=_config(ctx))
        if host.settings.auth_mode != "hmac":
            host.signer = host.build_signer()
    except DarkmeshError as exc:
        raise click.ClickException(str(exc)) from exc
    return host


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _signer_or_exit(host: Host) -> Signer:
    signer = host.signer
    if signer is None or not signer.has_role("node"):
        raise click.ClickException(
            "grants pin the node's key, which comes from the signer plugin: install "
            "darkmesh-aauth, create the node key (darkmesh keygen) and use auth_mode aauth or "
            "either")
    return signer


# ------------------------------------------------------------------- commands


@click.group("neotoma")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Node settings file (default: darkmesh --config, DARKMESH_CONFIG, "
              "./darkmesh.toml).")
@click.pass_context
def neotoma(ctx: click.Context, config_path: str | None) -> None:
    """Neotoma: agent grants, source diagnostics and the admission probe."""
    ctx.ensure_object(_GroupConfig).path = config_path


@neotoma.group("grants")
def grants() -> None:
    """Manage this node's agent_grant (Neotoma >= 0.9.0)."""


@grants.command("provision")
@click.option("--auto", is_flag=True, help="Apply the plan without asking.")
@click.option("--dry-run", is_flag=True, help="Compute and print the plan; write nothing.")
@click.option("--no-probe", is_flag=True, help="Skip the signed /session probe after writes.")
@click.pass_context
def provision(ctx: click.Context, auto: bool, dry_run: bool, no_probe: bool) -> None:
    """Create, update or report this node's grant, idempotently; print the plan (JSON).

    Exit status: 0 applied or nothing to do; 1 planned but not applied, or the grant is
    suspended/revoked; 2 error.
    """
    host = load_host(ctx)
    signer = _signer_or_exit(host)
    settings = settings_for(host)
    client = NeotomaClient(settings, signer=signer)
    provisioner = Provisioner(client=client, identity=signer.identity("node"),
                              settings=settings, state=host.state(STATE_FEATURE))

    async def main() -> tuple[dict[str, Any], int, list[str]]:
        try:
            outcome = await provisioner.run(apply=False)
            needs_write = outcome.plan["action"] in ("create", "update") or bool(
                outcome.plan.get("retired"))
            if needs_write and not dry_run:
                confirmed = auto or (sys.stdin.isatty() and click.confirm(
                    f"{outcome.plan['action']} grant on {settings.url}?", err=True))
                if confirmed:
                    outcome = await provisioner.run(apply=True, probe_after=not no_probe)
            return outcome.plan, outcome.exit_code, outcome.messages
        finally:
            await client.aclose()

    try:
        plan, code, messages = _run(main())
    except ProvisionError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_ERROR)
        return
    finally:
        host_db_close(host)
    _emit(plan)
    for message in messages:
        click.echo(message, err=True)
    ctx.exit(code)


@grants.command("list")
@click.pass_context
def list_grants(ctx: click.Context) -> None:
    """Print every grant of the Neotoma user (unsigned user call)."""
    host = load_host(ctx)
    settings = settings_for(host)
    client = NeotomaClient(settings, signer=None)
    provisioner = Provisioner(client=client, identity=_placeholder_identity(),
                              settings=settings, state=host.state(STATE_FEATURE))

    async def main() -> list[dict[str, Any]]:
        try:
            return await provisioner.list_grants()
        finally:
            await client.aclose()

    try:
        _emit({"grants": _run(main())})
    except ProvisionError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_ERROR)
    finally:
        host_db_close(host)


def _placeholder_identity() -> AgentIdentity:
    # Listing needs no identity; the provisioner only reads it when planning.
    return AgentIdentity(sub="", iss="", thumbprint="", public_jwk={})


def host_db_close(host: Host) -> None:
    """Release the node database the command opened (the host was never started)."""
    asyncio.run(host.stop())


@neotoma.command("probe")
@click.pass_context
def probe_command(ctx: click.Context) -> None:
    """Run the signed GET /session admission probe; exit 0 when admitted, else 1."""
    host = load_host(ctx)
    client = NeotomaClient(settings_for(host), signer=host.signer)

    async def main() -> Any:
        try:
            return await probe(client)
        finally:
            await client.aclose()

    result = _run(main())
    _emit({**result.to_json(), "message": result.message()})
    ctx.exit(0 if result.admitted else 1)


@neotoma.command("compare")
@click.option("--email", default=None, help="Compare only this identity.")
@click.pass_context
def compare_command(ctx: click.Context, email: str | None) -> None:
    """Show, side by side, what the vault and Neotoma know of each identity."""
    host = load_host(ctx)
    settings = settings_for(host)

    async def main() -> dict[str, Any]:
        store = NeotomaStore(host, settings)
        try:
            vault_contacts = [r async for r in store.fallback.iterate("contacts")]
            vault_interactions = [r async for r in store.fallback.iterate("interactions")]
            snap = await store.snapshot("contacts")
            live = None
            if snap is not None:
                live = effective(snap.records["contacts"], snap.records["interactions"])
            result = compare(effective(vault_contacts, vault_interactions), live, email=email)
            result["neotoma_url"] = settings.url
            result["fallback_store"] = settings.fallback_store
            if snap is None:
                result["neotoma_error"] = store.last_error
            return result
        finally:
            await store.close()

    try:
        _emit(_run(main()))
    finally:
        host_db_close(host)


# ------------------------------------------------------------------ connector


def _neotoma_settings(options: ConnectorOptions, neotoma_url: str | None) -> NeotomaSettings:
    """``[neotoma]`` of the loaded settings file plus the environment, and ``--neotoma-url``."""
    runtime = ConnectorRuntime(make_plugin_manager(entry_points=False), options.loaded.tables,
                               options.loaded.settings)
    try:
        settings: NeotomaSettings = runtime.plugin_settings(NeotomaSettings, plugin=PLUGIN)
        if neotoma_url:
            settings = NeotomaSettings.model_validate(
                {**settings.model_dump(), "url": neotoma_url,
                 "token": settings.token.get_secret_value()})
    except (DarkmeshError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    return settings


def _connector_signer(options: ConnectorOptions) -> Signer | None:
    """The node's signer, for signed Neotoma reads (None without node settings)."""
    if options.loaded.settings is None or options.loaded.settings.auth_mode == "hmac":
        return None
    try:
        host = Host.create(config=options.loaded.source)
        return host.build_signer()
    except DarkmeshError:
        return None


@click.command("neotoma")
@click.option("--neotoma-url", default=None, help="Neotoma URL (default: [neotoma] url, "
              "DARKMESH_NEOTOMA_URL, NEOTOMA_URL, http://localhost:3080).")
@click.option("--entity-type", default=None, help="Entity type to read (default contact).")
@click.option("--min-strength", type=click.FloatRange(0, 1), default=DEFAULT_MIN_STRENGTH,
              show_default=True, help="Keep contacts at least this strong.")
@click.option("--max-contacts", type=click.IntRange(1, 100_000), default=DEFAULT_MAX_CONTACTS,
              show_default=True, help="Ingest at most this many contacts (strongest first).")
@click.option("--max-entities", type=click.IntRange(1, 100_000), default=None,
              help="Read at most this many entities (default [neotoma] max_entities, 2000).")
@connector_options
def ingest_neotoma(neotoma_url: str | None, entity_type: str | None, min_strength: float,
                   max_contacts: int, max_entities: int | None,
                   options: ConnectorOptions) -> None:
    """Pull contacts from Neotoma, score them and ingest them into the node."""
    settings = _neotoma_settings(options, neotoma_url)
    node = options.loaded.settings
    own = node.self_identifiers if node is not None else []
    client = NeotomaClient(settings, signer=_connector_signer(options))
    kind = entity_type or settings.entity_type

    async def main() -> dict[str, Any]:
        try:
            with progress_bar(f"neotoma {kind}", quiet=options.quiet) as bar:
                plan = await plan_sync(
                    client, entity_type=kind, self_identifiers=own, min_strength=min_strength,
                    max_contacts=max_contacts, max_entities=max_entities,
                    timeout=settings.connector_timeout_seconds, on_page=bar.update,
                )
        finally:
            await client.aclose()
        summary = plan.summary()
        if options.dry_run:
            return {"dry_run": True, **summary,
                    "top_contacts": plan.contact_records()[:DRY_RUN_TOP]}
        url = options.require_url()
        auth = prepare_auth(options, [CONNECTOR_NAME])[CONNECTOR_NAME]
        async with IngestClient(url, timeout=options.timeout, quiet=options.quiet) as ingest:
            results = [await ingest.ingest("contacts", plan.contact_records(), auth,
                                           label="contacts (neotoma)")]
            interactions = plan.interaction_records()
            if interactions:
                results.append(await ingest.ingest("interactions", interactions, auth,
                                                   label="interactions (neotoma)"))
        return {**summary, "url": url, "auth": auth.scheme,
                "datasets": [r.to_json() for r in results]}

    try:
        _emit(_run(main()))
    except NeotomaError as exc:
        click.echo(f"Neotoma {exc.path} answered {exc.status}:", err=True)
        click.echo(exc.body, err=True)
        sys.exit(1)
    except NeotomaUnavailable as exc:
        click.echo(f"Neotoma is unreachable at {settings.url}: {exc}", err=True)
        sys.exit(1)
    except IngestError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)

