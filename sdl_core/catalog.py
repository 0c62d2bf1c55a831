"""What is installed: plugins, the spec names they register, and every setting.

Feeds ``darkmesh plugins``, ``darkmesh settings``, ``GET /darkmesh/plugins`` and the
``contracts/`` generator. Registration hooks do no I/O, so calling them again here is
cheap and safe.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pluggy
from pydantic import SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from sdl_core.errors import PluginSettingsError
from sdl_core.plugins import plugin_infos, registration_records
from sdl_core.settings import (
    REDACTED,
    NodeSettings,
    RelaySettings,
    env_name,
    load_settings,
    plain_value,
    redacted,
)

#: Spec kind -> the registration hook that returns records of that kind.
SPEC_HOOKS: dict[str, str] = {
    "store": "darkmesh_register_stores",
    "signer": "darkmesh_register_signers",
    "verifier": "darkmesh_register_verifiers",
    "transport": "darkmesh_register_transports",
    "relay_backend": "darkmesh_register_relay_backends",
    "skill": "darkmesh_register_skills",
    "connector": "darkmesh_register_connectors",
    "subscriber": "darkmesh_register_subscribers",
    "command": "darkmesh_register_commands",
    "capability": "darkmesh_register_capabilities",
}

CORE = "darkmesh-sdl"


def specs_by_plugin(pm: pluggy.PluginManager) -> dict[str, dict[str, list[str]]]:
    """``{plugin name: {kind: [spec names]}}`` for every plugin that registered a record."""
    out: dict[str, dict[str, list[str]]] = {}
    for kind, hook_name in SPEC_HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            names = [str(record.name) for record in registration_records(impl)]
            if names:
                out.setdefault(impl.plugin_name, {}).setdefault(kind, []).extend(names)
    return out


def all_spec_names(pm: pluggy.PluginManager) -> dict[str, list[str]]:
    """``{kind: sorted spec names}`` across every plugin (kinds without records omitted)."""
    merged: dict[str, set[str]] = {}
    for kinds in specs_by_plugin(pm).values():
        for kind, names in kinds.items():
            merged.setdefault(kind, set()).update(names)
    return {kind: sorted(names) for kind, names in sorted(merged.items())}


def plugin_listing(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Every plugin as JSON: name, distribution, version, built-in marker, hooks, specs."""
    by_plugin = specs_by_plugin(pm)
    listing = []
    for info in plugin_infos(pm):
        entry = info.to_json()
        entry["specs"] = by_plugin.get(info.name, {})
        listing.append(entry)
    return listing


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class SettingsModel:
    """One settings model and the plugin that owns it."""

    owner: str
    model: type[BaseSettings]

    @property
    def section(self) -> str:
        return str(getattr(self.model, "section", "") or "")


def settings_models(pm: pluggy.PluginManager) -> list[SettingsModel]:
    """The node and relay models, then every plugin model named by a record (once each)."""
    models = [SettingsModel(owner=CORE, model=NodeSettings),
              SettingsModel(owner=CORE, model=RelaySettings)]
    seen: set[type[BaseSettings]] = {NodeSettings, RelaySettings}
    for hook_name in SPEC_HOOKS.values():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            for record in registration_records(impl):
                model = getattr(record, "settings", None)
                if model is not None and model not in seen:
                    seen.add(model)
                    models.append(SettingsModel(owner=impl.plugin_name, model=model))
    return models


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def _default(info: Any) -> tuple[Any, bool]:
    """(default, required)."""
    if info.default_factory is not None:
        return plain_value(info.default_factory()), False
    if info.default is PydanticUndefined:
        return None, True
    return plain_value(info.default), False


def describe_settings(
    entry: SettingsModel,
    tables: Mapping[str, Mapping[str, Any]],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every field of one model: env var, TOML key, default, current value, description.

    The current value comes from validating the model against the environment and the
    file; when that fails (a required value is missing) each field shows its raw source
    value and ``error`` says what is wrong. Secrets are always redacted.
    """
    env = os.environ if environ is None else environ
    model = entry.model
    error: str | None = None
    try:
        current = redacted(load_settings(model, tables, plugin=entry.owner))
    except PluginSettingsError as exc:
        error = str(exc)
        current = {}
    fields = []
    table = tables.get(entry.section, {})
    for name, info in model.model_fields.items():
        variable = env_name(model, name)
        secret = _is_secret(info.annotation)
        default, required = _default(info)
        if name in current:
            value = current[name]
        else:
            raw = env.get(variable, table.get(name, default))
            value = (REDACTED if raw else "") if secret else plain_value(raw)
        fields.append({
            "name": name,
            "env": variable,
            "toml": f"[{entry.section}] {name}" if entry.section else name,
            "default": default,
            "required": required,
            "current": value,
            "secret": secret,
            "description": info.description or "",
        })
    return {
        "owner": entry.owner,
        "model": f"{model.__module__}.{model.__qualname__}",
        "section": entry.section,
        "error": error,
        "fields": fields,
    }
