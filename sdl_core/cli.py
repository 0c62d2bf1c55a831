"""The ``darkmesh`` command line.

Built-in commands: ``node serve``, ``relay serve``, ``init``, ``status``, ``plugins``,
``settings`` and the ``ingest`` group. Plugins add commands through
``darkmesh_register_commands`` (top level, or merged into a group of the same name)
and connectors through ``darkmesh_register_connectors`` (under ``darkmesh ingest``).
Plugins are loaded lazily, once per invocation, when a command needs them.

A plugin command finds the global options on the root context::

    state = click.get_current_context().find_root().obj   # a CliState
    tables = state.tables()        # the settings file in force (--config, ...)

Errors: a :class:`sdl_core.DarkmeshError` prints one line (no traceback) and exits 2;
bad flag values name the flag (click's own messages, exit 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import pluggy

from sdl_core.errors import DarkmeshError
from sdl_core.operator import operator_credential
from sdl_core.settings import NODE_ID_PATTERN, config_path, read_config_file

CORE_COMMANDS = ("init", "ingest", "node", "plugins", "relay", "settings", "status")


class CliError(click.ClickException):
    """One line on stderr, exit status 2."""

    exit_code = 2


@dataclass
class CliState:
    """Global options, on the root context's ``obj``."""

    config: Path | None = None
    log_level: str = "info"
    _pm: pluggy.PluginManager | None = field(default=None, repr=False)

    def config_file(self) -> Path | None:
        """``--config``, else ``DARKMESH_CONFIG``, else ``./darkmesh.toml`` if present."""
        return config_path(self.config)

    def tables(self) -> dict[str, dict[str, Any]]:
        return read_config_file(self.config_file())[0]

    def plugin_manager(self) -> pluggy.PluginManager:
        """Every installed plugin, honouring the ``DARKMESH_*_PLUGINS`` switches (cached)."""
        if self._pm is None:
            from sdl_core.plugins import make_plugin_manager

            self._pm = make_plugin_manager()
        return self._pm


def _state(ctx: click.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


# ------------------------------------------------------------------ lazy groups


class _UnionGroup(click.Group):
    """A built-in group and a plugin group of the same name, served as one."""

    def __init__(self, parts: Sequence[click.Group]) -> None:
        first = parts[0]
        super().__init__(name=first.name, help=first.help, params=list(first.params),
                         callback=first.callback, short_help=first.short_help)
        self.parts = list(parts)

    def list_commands(self, ctx: click.Context) -> list[str]:
        names: set[str] = set()
        for part in self.parts:
            names.update(part.list_commands(ctx))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for part in self.parts:
            found = part.get_command(ctx, cmd_name)
            if found is not None:
                return found
        return None


class DarkmeshGroup(click.Group):
    """The root group: built-in commands plus plugin commands, and one-line errors."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        from sdl_core.plugins import HostHooks

        cached = ctx.meta.get("darkmesh.plugin_commands")
        if cached is None:
            try:
                specs = HostHooks(_state(ctx).plugin_manager()).commands()
            except DarkmeshError as exc:
                raise CliError(str(exc)) from exc
            cached = {}
            for spec in specs:
                builtin = self.commands.get(spec.name)
                if builtin is not None and not (
                    isinstance(builtin, click.Group) and isinstance(spec.command, click.Group)
                ):
                    raise CliError(
                        f"plugin command {spec.name!r} clashes with the built-in command of "
                        "that name; rename it or register a group to merge into it"
                    )
                cached[spec.name] = spec.command
            ctx.meta["darkmesh.plugin_commands"] = cached
        return dict(cached)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builtin = self.commands.get(cmd_name)
        # Core commands that no plugin extends never need the plugins loaded.
        if builtin is not None and not isinstance(builtin, click.Group):
            return builtin
        plugin = self._plugin_commands(ctx).get(cmd_name)
        if builtin is not None and isinstance(plugin, click.Group):
            assert isinstance(builtin, click.Group)
            return _UnionGroup([builtin, plugin])
        return builtin or plugin

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DarkmeshError as exc:
            raise CliError(str(exc)) from exc


class IngestGroup(click.Group):
    """``darkmesh ingest <connector>``: one sub-command per registered connector."""

    def _connectors(self, ctx: click.Context) -> dict[str, click.Command]:
        from sdl_core.plugins import HostHooks

        try:
            specs = HostHooks(_state(ctx).plugin_manager()).connectors()
        except DarkmeshError as exc:
            raise CliError(str(exc)) from exc
        return {spec.name: spec.command for spec in specs}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self._connectors(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or self._connectors(ctx).get(cmd_name)


# ---------------------------------------------------------------- flag checks


def _node_id_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.match(NODE_ID_PATTERN, value):
        raise click.BadParameter(
            "must be 1-64 of letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return value


def _url_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value and not re.match(r"^https?://[^/\s]+", value.strip()):
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value.strip().rstrip("/") if value else value


PORT = click.IntRange(1, 65535)


def _overrides(**flags: Any) -> dict[str, Any]:
    """Flags the operator gave (None = not given, so lower sources apply)."""
    return {k: v for k, v in flags.items() if v is not None}


# ------------------------------------------------------------------------ root


@click.group(cls=DarkmeshGroup)
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Settings file (TOML, or an upstream .json node config). "
              "Default: DARKMESH_CONFIG, else ./darkmesh.toml.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level of served processes.")
@click.version_option(package_name="darkmesh-sdl", prog_name="darkmesh")
@click.pass_context
def main(ctx: click.Context, config: Path | None, log_level: str) -> None:
    """Darkmesh: a sovereign data layer for agent collaboration."""
    ctx.obj = CliState(config=config, log_level=log_level)


def _configure_logging(state: CliState, log_format: str, runtime: Any) -> None:
    from sdl_core.logging import configure_logging, secret_values

    configure_logging(log_format, state.log_level,  # type: ignore[arg-type]
                      secrets=secret_values(*runtime.loaded_settings()))


def _run(app: Any, host: str, port: int) -> None:
    from sdl_core.serving import run_app

    run_app(app, host=host, port=port)


# ------------------------------------------------------------------------ node


@main.group()
def node() -> None:
    """Run a node."""


@node.command("serve")
@click.option("--node-id", callback=_node_id_flag, help="This node's id (DARKMESH_NODE_ID).")
@click.option("--host", "bind_host", help="Bind address (DARKMESH_HOST).")
@click.option("--port", type=PORT, help="Port (DARKMESH_PORT).")
@click.option("--relay-url", callback=_url_flag, help="Relay base URL (DARKMESH_RELAY_URL).")
@click.option("--auth-mode", type=click.Choice(["hmac", "aauth", "either"]),
              help="Auth mode (DARKMESH_AUTH_MODE).")
@click.pass_context
def node_serve(ctx: click.Context, node_id: str | None, bind_host: str | None,
               port: int | None, relay_url: str | None, auth_mode: str | None) -> None:
    """Serve the node (its listener runs inside) until interrupted."""
    from sdl_core.host import Host
    from sdl_core.node_app import create_node_app

    state = _state(ctx)
    host = Host.create(
        config=state.config_file(), pm=state.plugin_manager(),
        overrides=_overrides(node_id=node_id, host=bind_host, port=port, relay_url=relay_url,
                             auth_mode=auth_mode),
    )
    app = create_node_app(host)  # prepares: plugin settings are validated here
    _configure_logging(state, host.settings.log_format, host)
    for warning in host.config_warnings:
        click.echo(f"warning: {warning}", err=True)
    # The operator opens the dashboard with this link (its secret lives in memory only).
    click.echo(app.state.dashboard.banner())
    _run(app, host.settings.host, host.settings.port)


# ----------------------------------------------------------------------- relay


@main.group()
def relay() -> None:
    """Run a relay."""


@relay.command("serve")
@click.option("--host", "bind_host", help="Bind address (DARKMESH_RELAY_HOST).")
@click.option("--port", type=PORT, help="Port (DARKMESH_RELAY_PORT).")
@click.option("--backend", help="Relay backend plugin (DARKMESH_RELAY_BACKEND).")
@click.option("--auth-mode", type=click.Choice(["hmac", "aauth", "either"]),
              help="Auth mode (DARKMESH_RELAY_AUTH_MODE).")
@click.pass_context
def relay_serve(ctx: click.Context, bind_host: str | None, port: int | None,
                backend: str | None, auth_mode: str | None) -> None:
    """Serve the relay until interrupted."""
    from sdl_core.host import RelayHost
    from sdl_core.relay.app import create_relay_app

    state = _state(ctx)
    relay_host = RelayHost.create(
        config=state.config_file(), pm=state.plugin_manager(),
        overrides=_overrides(host=bind_host, port=port, backend=backend, auth_mode=auth_mode),
    )
    names = [spec.name for spec in relay_host.hooks.relay_backends()]
    if relay_host.settings.backend not in names:
        from sdl_core.errors import UnknownPluginError

        raise UnknownPluginError("relay backend", relay_host.settings.backend, names,
                                 "--backend / DARKMESH_RELAY_BACKEND")
    app = create_relay_app(relay_host)
    _configure_logging(state, "json", relay_host)
    _run(app, relay_host.settings.host, relay_host.settings.port)


# ------------------------------------------------------------------------ init


def _toml_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


@main.command("init")
@click.option("--node-id", callback=_node_id_flag, help="This node's id (required unless "
              "--from-upstream gives one).")
@click.option("--port", type=PORT, help="Port the node listens on [default: 8001].")
@click.option("--listen-url", callback=_url_flag, help="Public base URL of the node.")
@click.option("--relay-url", callback=_url_flag, help="Relay base URL.")
@click.option("--relay-key", help="Shared relay secret (hmac).")
@click.option("--auth-mode", type=click.Choice(["hmac", "aauth", "either"]),
              help="Auth mode [default: either].")
@click.option("--store", help="Store plugin [default: vault].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory [default: ./data].")
@click.option("--vault-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Vault key file, outside the data dir [default: ./keys/<node_id>.vault.key].")
@click.option("--from-upstream", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Convert an upstream JSON node config and import its .enc datasets.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("darkmesh.toml"), show_default=True, help="TOML file to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output file.")
def init(node_id: str | None, port: int | None, listen_url: str | None,
         relay_url: str | None, relay_key: str | None, auth_mode: str | None,
         store: str | None, data_dir: Path | None, vault_key_file: Path | None,
         from_upstream: Path | None, output: Path, force: bool) -> None:
    """Write a darkmesh.toml, create the data directory and the vault key file (0600)."""
    import tomli_w

    from sdl_core.settings import NodeSettings, load_settings
    from sdl_core.vault import keys as vault_keys

    if output.exists() and not force:
        raise CliError(f"{output} already exists; pass --force to overwrite it")
    tables: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    upstream_vault: Path | None = None
    if from_upstream is not None:
        from sdl_core.upstream import tables_from_upstream_json

        tables, warnings = tables_from_upstream_json(from_upstream.read_bytes(),
                                                     source=str(from_upstream))
        raw_vault = tables.get("node", {}).get("data_dir")  # upstream's vault_path
        upstream_vault = Path(raw_vault) if isinstance(raw_vault, str) and raw_vault else None
    node_table = dict(tables.get("node", {}))
    node_table.update(_overrides(node_id=node_id, port=port, listen_url=listen_url,
                                 relay_url=relay_url, relay_key=relay_key, auth_mode=auth_mode,
                                 store=store, data_dir=data_dir, vault_key_file=vault_key_file))
    if "node_id" not in node_table:
        raise click.UsageError("--node-id is required (or --from-upstream with a node_id)")
    mode = node_table.get("auth_mode", "either")
    if mode != "aauth" and not node_table.get("node_key"):
        # Operator and peer credentials are kept apart (wire-v1 §10.1 item 6).
        node_table["node_key"] = secrets.token_urlsafe(32)
        node_table.setdefault("peer_key", secrets.token_urlsafe(32))
    if mode == "hmac" and node_table.get("relay_url") and not node_table.get("relay_key"):
        raise click.BadParameter("auth mode hmac with a relay needs the relay's shared key",
                                 param_hint="--relay-key")
    data = Path(node_table.get("data_dir", "data")).expanduser().resolve()
    key_file = Path(node_table.get("vault_key_file")
                    or Path("keys") / f"{node_table['node_id']}.vault.key").expanduser().resolve()
    if vault_keys.is_inside(key_file, data):
        raise click.BadParameter(f"{key_file} is inside the data directory {data}; keep the "
                                 "key apart from the data it opens", param_hint="--vault-key-file")
    node_table["data_dir"] = str(data)
    node_table["vault_key_file"] = str(key_file)
    tables["node"] = node_table
    settings = load_settings(NodeSettings, tables)  # refuse a config that would not start

    data.mkdir(parents=True, exist_ok=True)
    created_key = False
    uses_key_file = settings.store == "vault" and not settings.vault_passphrase.get_secret_value()
    if uses_key_file and not key_file.exists():
        vault_keys.write_key_file(key_file, vault_keys.new_master_key(), 1)
        created_key = True
    document = {name: {k: _toml_value(v) for k, v in table.items()}
                for name, table in tables.items() if table}
    _write_private(output, tomli_w.dumps(document).encode("utf-8"))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {output} (mode 0600: it holds the node's shared keys)")
    click.echo(f"data directory: {data}")
    if created_key:
        click.echo(f"vault key file: {key_file} (mode 0600; back it up, keep it off the data disk)")
    if upstream_vault is not None:
        counts = asyncio.run(_import_upstream(output, upstream_vault))
        for dataset, count in counts.items():
            click.echo(f"imported {dataset}: {count} records")


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.chmod(path, 0o600)  # an existing file keeps its mode on O_TRUNC


async def _import_upstream(config: Path, vault_path: Path) -> dict[str, int]:
    from sdl_core.host import Host
    from sdl_core.upstream import import_upstream_vault

    host = Host.create(config=config)
    host.prepare()
    try:
        return await import_upstream_vault(vault_path, host.store)
    finally:
        await host.stop()


# ---------------------------------------------------------------------- status


@main.command("status")
@click.option("--url", callback=_url_flag,
              help="Node base URL [default: the settings' listen_url].")
@click.option("--timeout", type=click.FloatRange(0.1, 120), default=5.0, show_default=True,
              help="Seconds to wait for the node.")
@click.pass_context
def status(ctx: click.Context, url: str | None, timeout: float) -> None:
    """Ask the running node for its health and integration status; print JSON."""
    from sdl_core.host import Host

    state = _state(ctx)
    host = Host.create(config=state.config_file(), pm=state.plugin_manager())
    base = url or host.settings.listen_url
    result = asyncio.run(_fetch_status(host, base, timeout))
    click.echo(json.dumps(result, indent=2, sort_keys=True))


async def _fetch_status(host: Any, base: str, timeout: float) -> dict[str, Any]:
    settings = host.settings
    credential = operator_credential(
        base_url=base, auth_mode=settings.auth_mode,
        node_key=settings.node_key.get_secret_value(),
        signer=host.build_signer() if settings.auth_mode != "hmac" else None,
    )
    async with httpx.AsyncClient(base_url=base, timeout=timeout, headers=credential.headers,
                                 auth=credential.auth, follow_redirects=False) as client:
        try:
            health = await client.get("/darkmesh/health")
            integrations = await client.get("/darkmesh/integrations/status")
        except httpx.TransportError as exc:
            raise CliError(
                f"node at {base} is not reachable ({type(exc).__name__}); start it with "
                "`darkmesh node serve` or pass --url"
            ) from exc
    for answer in (health, integrations):
        if answer.status_code != 200:
            raise CliError(f"node at {base} answered {answer.request.url.path} with "
                           f"{answer.status_code}: {_detail(answer)}")
    return {"url": base, "health": health.json(), "integrations": integrations.json()}


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:200]


# --------------------------------------------------------------------- listings


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins, built-ins included, and the spec names they register."""
    from sdl_core.catalog import plugin_listing

    listing = plugin_listing(_state(ctx).plugin_manager())
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for entry in listing:
        marker = " (built-in)" if entry["builtin"] else ""
        version = f" {entry['version']}" if entry["version"] else ""
        click.echo(f"{entry['name']}{version}{marker}")
        for kind, names in sorted(entry["specs"].items()):
            click.echo(f"    {kind}: {', '.join(names)}")


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def settings_command(ctx: click.Context, as_json: bool) -> None:
    """List every setting of the node, the relay and each installed plugin.

    Each with its environment variable, TOML key, default, current value and
    description; secrets are redacted.
    """
    from sdl_core.catalog import describe_settings, settings_models

    state = _state(ctx)
    tables = state.tables()
    described = [describe_settings(entry, tables)
                 for entry in settings_models(state.plugin_manager())]
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    for model in described:
        click.echo(f"[{model['section']}]  ({model['owner']}: {model['model']})")
        if model["error"]:
            click.echo(f"    ! {model['error']}")
        for f in model["fields"]:
            default = "(required)" if f["required"] else json.dumps(f["default"], default=str)
            click.echo(f"    {f['name']} = {json.dumps(f['current'], default=str)}")
            click.echo(f"        {f['env']}  {f['toml']}  default {default}")
            if f["description"]:
                click.echo(f"        {f['description']}")


# ---------------------------------------------------------------------- ingest


@main.group("ingest", cls=IngestGroup)
def ingest() -> None:
    """Ingest a source into the node through its API (one sub-command per connector)."""


__all__: Sequence[str] = ["CliError", "CliState", "main"]

if __name__ == "__main__":
    main(prog_name="darkmesh")
