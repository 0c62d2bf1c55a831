"""The plugin manager factory and the typed facade over ``pm.hook``.

``make_plugin_manager`` is the only way to get a manager: never an import side
effect. ``HostHooks`` is the only code that touches ``pm.hook``.

Call order, stated once: registration hooks run in pluggy's order (last registered
first, ``tryfirst``/``trylast`` honoured), so a third-party plugin's record comes
before a built-in's; names must still be unique, so order only matters for listing.
Lifecycle hooks run in the same order at start-up and in reverse at shutdown.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from sdl_core import hookspecs
from sdl_core.errors import PluginConflictError, PluginLoadError
from sdl_core.specs import (
    CapabilitySpec,
    CommandSpec,
    ConnectorSpec,
    RelayBackendSpec,
    SignerSpec,
    SkillSpec,
    StoreSpec,
    SubscriberSpec,
    TransportSpec,
    VerifierSpec,
)

if TYPE_CHECKING:
    from sdl_core.host import Host

PROJECT = hookspecs.PROJECT_NAME
ENTRY_POINT_GROUP = PROJECT
BUILTIN_PREFIX = "darkmesh-sdl."

hookimpl = pluggy.HookimplMarker(PROJECT)

T = TypeVar("T")


def _split(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


@dataclass(frozen=True, kw_only=True)
class PluginInfo:
    """One loaded plugin, for ``darkmesh plugins`` and ``/darkmesh/plugins``."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    module: str
    hooks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "module": self.module,
            "hooks": list(self.hooks),
        }


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def make_plugin_manager(
    *,
    load: Iterable[str] | None = None,
    disable: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
    plugins: Sequence[object] = (),
    entry_points: bool = True,
    environ: Mapping[str, str] | None = None,
) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    :param load: third-party entry-point names to load (default:
        ``DARKMESH_LOAD_PLUGINS``; unset means all). Built-ins load unless disabled.
    :param disable: entry-point names to block, built-ins included (default:
        ``DARKMESH_DISABLE_PLUGINS``).
    :param only: load exactly these entry-point names, built-ins included (tests).
    :param plugins: extra plugin objects registered after the entry points (tests,
        temporary plugins); each is registered under its ``__name__``.
    :param entry_points: set False to skip discovery entirely.
    """
    env = os.environ if environ is None else environ
    allow = set(load) if load is not None else _split(env.get("DARKMESH_LOAD_PLUGINS"))
    blocked = set(disable) if disable is not None else _split(env.get("DARKMESH_DISABLE_PLUGINS"))
    exact = set(only) if only is not None else None

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if env.get("DARKMESH_TRACE_PLUGINS"):
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    for name in blocked:
        pm.set_blocked(name)
    if entry_points:
        for ep in _entry_points():
            if ep.name in blocked:
                continue
            if exact is not None:
                if ep.name not in exact:
                    continue
            elif allow and not ep.name.startswith(BUILTIN_PREFIX) and ep.name not in allow:
                continue
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as exc:  # a broken plugin must stop start-up, named
                raise PluginLoadError(ep.name, exc) from exc
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            raise PluginLoadError(name, exc) from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        # exc.plugin is the plugin object; the message must name it as operators do.
        name = str(pm.get_name(exc.plugin) or getattr(exc.plugin, "__name__", repr(exc.plugin)))
        raise PluginLoadError(name, exc) from exc
    return pm


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin with its distribution, for listings."""
    dists = {name: dist for name, dist in _distinfo(pm)}
    infos: list[PluginInfo] = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:
            continue
        dist = dists.get(name)
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        module = getattr(plugin, "__name__", type(plugin).__name__)
        infos.append(
            PluginInfo(
                name=name,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
                builtin=name.startswith(BUILTIN_PREFIX),
                module=module,
                hooks=hooks,
            )
        )
    return infos


def _distinfo(pm: pluggy.PluginManager) -> list[tuple[str, importlib.metadata.Distribution]]:
    out = []
    loaded = {name for name, _ in pm.list_name_plugin()}
    for ep in _entry_points():
        if ep.name in loaded and ep.dist is not None:
            out.append((ep.name, ep.dist))
    return out


def registration_records(impl: pluggy.HookImpl) -> list[Any]:
    """The records one registration hookimpl returns, as a list.

    A hookimpl that raises (often an import inside it failing) stops start-up with a
    :class:`PluginLoadError` naming its plugin, like a plugin that fails to import.
    """
    try:
        produced: Any = impl.function()
        return list(produced or ())
    except Exception as exc:
        raise PluginLoadError(impl.plugin_name, exc) from exc


class HostHooks:
    """Typed facade over ``pm.hook``: one method per hook, names checked unique."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        # Registration hooks take no arguments, so their records change only when the set
        # of implementations does: they are collected once per set, not on every request.
        self._records: dict[str, tuple[list[Any], list[Any]]] = {}

    def _records_of(self, hook_name: str) -> list[tuple[Any, Any]]:
        """``(impl, record)`` pairs of one registration hook, last-registered first."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        cached = self._records.get(hook_name)
        if cached is None or cached[0] != impls:
            # pluggy calls implementations last-registered first; keep that order.
            pairs = [(impl, record) for impl in reversed(impls)
                     for record in registration_records(impl)]
            cached = self._records[hook_name] = (impls, pairs)
        return list(cached[1])

    def _collect(self, hook_name: str, kind: str, key: Callable[[Any], str]) -> list[Any]:
        owners: dict[str, str] = {}
        records: list[Any] = []
        for impl, record in self._records_of(hook_name):
            name = key(record)
            if name in owners:
                raise PluginConflictError(kind, name, owners[name], impl.plugin_name)
            owners[name] = impl.plugin_name
            records.append(record)
        return records

    def owner_of(self, hook_name: str, record_name: str) -> str | None:
        """The plugin name that registered ``record_name`` through ``hook_name``."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            for record in registration_records(impl):
                if getattr(record, "name", None) == record_name:
                    return str(impl.plugin_name)
        return None

    def stores(self) -> list[StoreSpec]:
        return self._collect("darkmesh_register_stores", "store", lambda r: r.name)

    def signers(self) -> list[SignerSpec]:
        return self._collect("darkmesh_register_signers", "signer", lambda r: r.name)

    def verifiers(self) -> list[VerifierSpec]:
        return self._collect("darkmesh_register_verifiers", "verifier", lambda r: r.name)

    def transports(self) -> list[TransportSpec]:
        return self._collect("darkmesh_register_transports", "transport", lambda r: r.name)

    def relay_backends(self) -> list[RelayBackendSpec]:
        return self._collect("darkmesh_register_relay_backends", "relay backend", lambda r: r.name)

    def skills(self) -> list[SkillSpec]:
        return self._collect("darkmesh_register_skills", "skill", lambda r: r.name)

    def connectors(self) -> list[ConnectorSpec]:
        return self._collect("darkmesh_register_connectors", "connector", lambda r: r.name)

    def subscribers(self) -> list[SubscriberSpec]:
        return self._collect("darkmesh_register_subscribers", "subscriber", lambda r: r.name)

    def commands(self) -> list[CommandSpec]:
        return self._collect("darkmesh_register_commands", "command", lambda r: r.name)

    def capabilities(self) -> list[CapabilitySpec]:
        # Several plugins may declare the same capability name; the first wins.
        seen: dict[str, CapabilitySpec] = {}
        for _, record in self._records_of("darkmesh_register_capabilities"):
            seen.setdefault(record.name, record)
        return list(seen.values())

    async def startup(self, host: Host) -> None:
        for result in self.pm.hook.darkmesh_startup(host=host):
            await _await_maybe(result)

    async def shutdown(self, host: Host) -> None:
        for result in reversed(self.pm.hook.darkmesh_shutdown(host=host)):
            await _await_maybe(result)


async def _await_maybe(value: Awaitable[None] | None) -> None:
    if inspect.isawaitable(value):
        await value
