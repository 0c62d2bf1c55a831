"""The host: plugin manager, settings and the objects built from the registered records.

``Host`` runs a node; ``RelayHost`` runs a relay. Both build plugin objects the same
way: validate the record's settings model (errors name the plugin and the variable),
then call ``spec.factory(host, settings)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
import pluggy
from pydantic_settings import BaseSettings

from sdl_core.catalog import settings_models
from sdl_core.errors import PluginSettingsError, StartupError, UnknownPluginError
from sdl_core.events import EventBus
from sdl_core.metrics import Metrics
from sdl_core.plugins import HostHooks, make_plugin_manager
from sdl_core.settings import (
    NodeSettings,
    RelaySettings,
    config_path,
    load_settings,
    read_config_file,
)
from sdl_core.state import NodeDatabase, StateArea

if TYPE_CHECKING:
    from sdl_core.listener import Listener
    from sdl_core.protocols import RelayBackend, Signer, Skill, Store, Verifier
    from sdl_core.relay.client import RelayClient
    from sdl_core.specs import SkillSpec

log = logging.getLogger("darkmesh.host")

#: Datasets the core itself declares; skills add theirs through ``SkillSpec.datasets``.
CORE_DATASETS = ("contacts", "interactions")
#: How often the host deletes expired plugin state (reads skip it in between).
STATE_PURGE_INTERVAL_SECONDS = 300.0

#: Capability names the core's own routes (node and relay) use.
CORE_CAPABILITIES = (
    "node.query",
    "node.ingest",
    "node.consent",
    "node.approve",
    "node.respond",
    "node.callback.consent",
    "node.callback.reveal",
    "relay.register",
    "relay.list",
    "relay.publish",
    "relay.pull",
    "relay.mailbox.send",
    "relay.mailbox.read",
)


class Runtime:
    """What node and relay hosts share: plugins, settings tables, plugin objects."""

    role: ClassVar[Literal["node", "relay"]]
    #: The settings file this runtime was read from (``create`` sets it), so plugins can
    #: resolve paths "beside the settings file" whether it came from ``--config``,
    #: ``DARKMESH_CONFIG`` or ``./darkmesh.toml``.
    config_file: Path | None = None

    def __init__(
        self,
        pm: pluggy.PluginManager,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        self.pm = pm
        self.hooks = HostHooks(pm)
        self.tables: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (tables or {}).items()}
        self.config_warnings = list(warnings)
        self._plugin_settings: dict[type[BaseSettings], BaseSettings] = {}
        self.metrics = Metrics(role=self.role)

    def plugin_settings(self, model: type[BaseSettings], *, plugin: str) -> Any:
        """Validated settings of one plugin model (cached)."""
        if model not in self._plugin_settings:
            self._plugin_settings[model] = load_settings(model, self.tables, plugin=plugin)
        return self._plugin_settings[model]

    def loaded_settings(self) -> list[BaseSettings]:
        """The process settings and every plugin settings model validated so far (for
        redaction: their ``SecretStr`` values must never be logged)."""
        own: Any = getattr(self, "settings", None)
        return ([own] if own is not None else []) + list(self._plugin_settings.values())

    def build(self, spec: Any, hook_name: str) -> Any:
        """Validate ``spec.settings`` and call ``spec.factory(host, settings)``."""
        owner = self.hooks.owner_of(hook_name, spec.name) or spec.name
        settings = self.plugin_settings(spec.settings, plugin=owner) if spec.settings else None
        return spec.factory(self, settings)

    def capability_names(self) -> set[str]:
        names = set(CORE_CAPABILITIES)
        names.update(spec.name for spec in self.hooks.capabilities())
        for skill in self.hooks.skills():
            names.update(skill.capabilities)
        return names

    def build_verifier(self, scheme: str = "aauth") -> Verifier | None:
        for spec in self.hooks.verifiers():
            if spec.scheme == scheme:
                return self.build(spec, "darkmesh_register_verifiers")  # type: ignore[no-any-return]
        return None

    def build_signer(self) -> Signer | None:
        specs = self.hooks.signers()
        if not specs:
            return None
        return self.build(specs[0], "darkmesh_register_signers")  # type: ignore[no-any-return]


class Host(Runtime):
    """A running node."""

    role: ClassVar[Literal["node", "relay"]] = "node"

    def __init__(
        self,
        pm: pluggy.PluginManager,
        settings: NodeSettings,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
        warnings: Sequence[str] = (),
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(pm, tables, warnings)
        self.settings = settings
        self.events = EventBus(settings.event_budget_seconds)
        self._transport_override = transport
        self._db: NodeDatabase | None = None
        self._state_purger: asyncio.Task[None] | None = None
        self.store: Store = None  # type: ignore[assignment]
        self.signer: Signer | None = None
        self.verifier: Verifier | None = None
        self.transport: httpx.AsyncBaseTransport = None  # type: ignore[assignment]
        self.skill_specs: dict[str, SkillSpec] = {}
        self.skills: dict[str, Skill] = {}
        self.relay: RelayClient | None = None
        self.listener: Listener | None = None
        self.prepared = False
        self.started = False
        self._start_lock = asyncio.Lock()
        self._extra_status: dict[str, Any] = {}

    # ----------------------------------------------------------------- creation

    @classmethod
    def create(
        cls,
        *,
        config: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        pm: pluggy.PluginManager | None = None,
        plugins: Sequence[object] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Host:
        """Read the settings file and environment, load plugins, validate node settings."""
        source = config_path(config)
        tables, warnings = read_config_file(source)
        settings = load_settings(NodeSettings, tables, overrides=overrides)
        manager = pm or make_plugin_manager(plugins=plugins)
        host = cls(manager, settings, tables, warnings, transport=transport)
        host.config_file = source
        host.report_unknown_tables()
        return host

    def report_unknown_tables(self) -> None:
        known = {getattr(m.model, "section", "") for m in settings_models(self.pm)}
        for name in sorted(set(self.tables) - known):
            msg = f"settings table [{name}] belongs to no installed plugin; it is ignored"
            self.config_warnings.append(msg)

    # -------------------------------------------------------------- state, db

    @property
    def database(self) -> NodeDatabase:
        if self._db is None:
            self._db = NodeDatabase(Path(self.settings.data_dir) / "node.db")
        return self._db

    async def _purge_state_forever(self) -> None:
        """Expired entries of every state area, every few minutes after the one at start:
        plugins need not purge on their request paths, and nothing grows past its expiry."""
        while True:
            await asyncio.sleep(STATE_PURGE_INTERVAL_SECONDS)
            try:
                self.database.purge_expired()
            except Exception:  # a failing purge must not end the loop
                log.exception("node state purge failed")

    def state(self, feature: str) -> StateArea:
        """The durable state area of one plugin (``host.state("warm_intro")``)."""
        return StateArea(self.database, feature)

    # ---------------------------------------------------------------- registry

    def templates(self) -> list[str]:
        """Templates this node serves: the ``capabilities`` setting, else every skill's."""
        if self.settings.capabilities is not None:
            return list(self.settings.capabilities)
        out: list[str] = []
        for spec in self.hooks.skills():
            for template in spec.templates:
                if template not in out:
                    out.append(template)
        return out

    def datasets(self) -> set[str]:
        names = set(CORE_DATASETS)
        for spec in self.hooks.skills():
            names.update(spec.datasets)
        return names

    # -------------------------------------------------------------- outbound

    def http_client(
        self,
        *,
        role: str = "node",
        base_url: str = "",
        timeout: float = 10.0,
        sign: bool = True,
        authority: str | None = None,
    ) -> httpx.AsyncClient:
        """An httpx client on the node's transport, signing as ``role`` when a signer is
        configured for it and the node is not in ``hmac`` mode. Never follows redirects."""
        auth: httpx.Auth | None = None
        if sign and self.settings.auth_mode != "hmac" and self.signer is not None:
            if self.signer.has_role(role):
                auth = self.signer.auth(role, authority=authority)
        return httpx.AsyncClient(
            transport=self.transport,
            base_url=base_url,
            timeout=timeout,
            auth=auth,
            follow_redirects=False,
        )

    def signing_enabled(self, role: str = "node") -> bool:
        return (
            self.settings.auth_mode != "hmac"
            and self.signer is not None
            and self.signer.has_role(role)
        )

    # ---------------------------------------------------------------- lifecycle

    def _select(self, kind: str, setting: str, name: str, specs: Sequence[Any]) -> Any:
        for spec in specs:
            if spec.name == name:
                return spec
        raise UnknownPluginError(kind, name, [s.name for s in specs], setting)

    def prepare(self) -> None:
        """Build every piece synchronously: store, transport, signer, verifier,
        subscribers, skills and the relay client; validate auth. No I/O beyond what a
        factory does to open its files.

        ``create_node_app`` calls this so that skill routes exist before the first
        request; :meth:`start` calls it when nobody did. Idempotent.
        """
        if self.prepared:
            return
        from sdl_core.auth import validate_node_auth

        store_spec = self._select("store", "DARKMESH_STORE", self.settings.store,
                                  self.hooks.stores())
        self.store = self.build(store_spec, "darkmesh_register_stores")
        if self._transport_override is not None:
            self.transport = self._transport_override
        else:
            transport_spec = self._select(
                "transport", "DARKMESH_TRANSPORT", self.settings.transport,
                self.hooks.transports(),
            )
            self.transport = self.build(transport_spec, "darkmesh_register_transports")
        self.signer = self.build_signer() if self.settings.auth_mode != "hmac" else None
        self.verifier = self.build_verifier("aauth") if self.settings.auth_mode != "hmac" else None
        validate_node_auth(self)
        for sub in self.hooks.subscribers():
            handler = self.build(sub, "darkmesh_register_subscribers")
            self.events.subscribe(sub.event, sub.name, handler)
        for spec in self.hooks.skills():
            self.skill_specs[spec.name] = spec
            self.skills[spec.name] = self.build(spec, "darkmesh_register_skills")
        if self.settings.relay_url:
            from sdl_core.relay.client import RelayClient

            self.relay = RelayClient(self)
        self.prepared = True

    async def start(self) -> None:
        """Prepare (if needed), then start skills, run ``darkmesh_startup`` and the
        listener. Idempotent."""
        async with self._start_lock:
            if self.started:
                return
            self.prepare()
            await self._start()
            self.started = True

    async def _start(self) -> None:
        # Here, on the event loop, before any worker thread (the listener's) can race to
        # open the database lazily.
        self.database.purge_expired()
        self._state_purger = asyncio.create_task(self._purge_state_forever(),
                                                 name="node-state-purge")
        for skill in self.skills.values():
            await skill.start()
        await self.hooks.startup(self)
        if self.relay is not None and self.settings.listener:
            from sdl_core.listener import Listener

            self.listener = Listener(self)
            await self.listener.start()

    async def stop(self) -> None:
        """Stop what :meth:`start` started and release what :meth:`prepare` opened.

        Idempotent; safe on a host that was prepared but never started.
        """
        if self.started:
            self.started = False
            if self._state_purger is not None:
                self._state_purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._state_purger
                self._state_purger = None
            if self.listener is not None:
                await self.listener.stop()
                self.listener = None
            for skill in reversed(list(self.skills.values())):
                try:
                    await skill.stop()
                except Exception:
                    log.exception("skill stop failed")
            await self.hooks.shutdown(self)
            await self.events.drain()
        if self.prepared:
            self.prepared = False
            if self.relay is not None:
                await self.relay.aclose()
                self.relay = None
            if self.store is not None:
                await self.store.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ status

    def set_status(self, name: str, value: Any) -> None:
        """Let a plugin publish a status block without a ``status()`` method.

        ``value`` may be a callable (sync or async) returning the block; it is called
        each time status is gathered, so the block stays current.
        """
        self._extra_status[name] = value

    async def plugin_status(self) -> dict[str, Any]:
        """Each plugin object's ``status()`` (store, signer, verifier, skills)."""
        out: dict[str, Any] = {
            name: await _probe(block) if callable(block) else block
            for name, block in self._extra_status.items()
        }
        pieces: dict[str, Any] = {"store": self.store, "signer": self.signer,
                                  "verifier": self.verifier}
        pieces.update({f"skill:{name}": skill for name, skill in self.skills.items()})
        for name, piece in pieces.items():
            status = getattr(piece, "status", None)
            if piece is not None and status is not None:
                out[name] = await _probe(status)
        if self.listener is not None:
            out["listener"] = self.listener.status()
        out["auth"] = {"mode": self.settings.auth_mode, "callers": self.metrics.callers_json()}
        return out


async def _probe(status: Callable[[], Any]) -> Any:
    """One status block (sync or async); a probe that fails reports its error instead."""
    try:
        value = status()
        if asyncio.iscoroutine(value):
            value = await value
    except Exception as exc:  # a status probe must never break status
        value = {"error": f"{type(exc).__name__}: {exc}"}
    return value


class RelayHost(Runtime):
    """A running relay: settings, backend and verifier."""

    role: ClassVar[Literal["node", "relay"]] = "relay"

    def __init__(
        self,
        pm: pluggy.PluginManager,
        settings: RelaySettings,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        super().__init__(pm, tables, warnings)
        self.settings = settings
        self.backend: RelayBackend = None  # type: ignore[assignment]
        self.verifier: Verifier | None = None

    @classmethod
    def create(
        cls,
        *,
        config: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        pm: pluggy.PluginManager | None = None,
        plugins: Sequence[object] = (),
    ) -> RelayHost:
        source = config_path(config)
        tables, warnings = read_config_file(source)
        settings = load_settings(RelaySettings, tables, overrides=overrides)
        relay = cls(pm or make_plugin_manager(plugins=plugins), settings, tables, warnings)
        relay.config_file = source
        return relay

    async def start(self) -> None:
        from sdl_core.auth import validate_relay_auth

        specs = self.hooks.relay_backends()
        for spec in specs:
            if spec.name == self.settings.backend:
                break
        else:
            raise UnknownPluginError(
                "relay backend", self.settings.backend, [s.name for s in specs],
                "DARKMESH_RELAY_BACKEND",
            )
        self.backend = self.build(spec, "darkmesh_register_relay_backends")
        try:
            await self.backend.start()
        except PluginSettingsError:
            raise
        except Exception as exc:
            raise StartupError(
                f"relay backend {spec.name!r} could not start: {type(exc).__name__}: {exc}"
            ) from exc
        self.verifier = self.build_verifier("aauth") if self.settings.auth_mode != "hmac" else None
        validate_relay_auth(self)
        await self.hooks.startup(self)  # type: ignore[arg-type]

    async def stop(self) -> None:
        await self.hooks.shutdown(self)  # type: ignore[arg-type]
        if self.backend is not None:
            await self.backend.close()
