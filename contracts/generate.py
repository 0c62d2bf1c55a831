"""Generate ``contracts/``: JSON Schemas of every wire message and the route table.

Run from the repository root, with every distribution installed (``tox -e all``, or
``pip install -e . -e skills/... ...``)::

    python contracts/generate.py          # rewrite contracts/
    python contracts/generate.py --check  # exit 1 if contracts/ differs (CI)

Sources: the node's core models (``sdl_core.node_models``), the relay's
(``sdl_core.relay.models``), the core events (``sdl_core.events``), and the
``request_model`` / ``response_model`` of every installed route — core, skill, signer
and verifier routes of a node built with every installed plugin, and the relay's
routes — and the models a skill returns from an optional ``wire_models()`` method
(what it sends outside any route: relay posts, sealed mailbox bodies). ``routes.json``
lists method, path, capability, bound field, owner, distribution and schema references;
every distribution's routes appear in it.
``tests/core/test_contracts.py`` fails when the committed files drift from a fresh
generation (for the distributions installed in the test environment).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
CORE = "darkmesh-sdl"
GENERATED_BY = "python contracts/generate.py"


@dataclass(frozen=True)
class SchemaRef:
    namespace: str  # "node", "relay", "events", or a skill's spec name
    model: type[BaseModel]
    distribution: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}.{self.model.__name__}"

    @property
    def file(self) -> str:
        return f"schemas/{self.ref}.json"


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _models_of(module: Any) -> list[type[BaseModel]]:
    """Public pydantic models defined in ``module`` (not imported ones)."""
    return [
        value for name, value in sorted(vars(module).items())
        if inspect.isclass(value) and issubclass(value, BaseModel) and value is not BaseModel
        and value.__module__ == module.__name__ and not name.startswith("_")
    ]


def _distribution(pm: Any, hook: str, record_name: str) -> str:
    from sdl_core.plugins import BUILTIN_PREFIX, HostHooks

    owner = HostHooks(pm).owner_of(hook, record_name) or CORE
    return CORE if owner.startswith(BUILTIN_PREFIX) else owner


def _build_hosts() -> tuple[Any, Any, Any]:
    """A node with every installed plugin (memory store, hmac) and a relay."""
    from sdl_core.host import Host, RelayHost
    from sdl_core.plugins import make_plugin_manager
    from sdl_core.settings import NodeSettings, RelaySettings, load_settings

    scratch = tempfile.TemporaryDirectory(prefix="darkmesh-contracts-")
    pm = make_plugin_manager(environ={})
    node_settings = load_settings(NodeSettings, {}, overrides={
        "node_id": "contracts", "store": "memory", "auth_mode": "either",
        "node_key": "contracts-node-key", "peer_key": "contracts-peer-key",
        "listener": False, "data_dir": scratch.name,
    })
    host = Host(pm, node_settings)
    relay_settings = load_settings(RelaySettings, {}, overrides={
        "backend": "memory", "auth_mode": "hmac", "key": "contracts-relay-key"})
    relay = RelayHost(pm, relay_settings)
    return host, relay, scratch


def _ref_for(model: Any, namespace: str, distribution: str,
             refs: dict[str, SchemaRef]) -> str | None:
    if model is None:
        return None
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(f"{namespace}: request_model/response_model must be a pydantic model, "
                        f"not {model!r}")
    schema = SchemaRef(namespace, model, distribution)
    existing = refs.get(schema.ref)
    if existing is not None and existing.model is not model:
        raise ValueError(f"two models named {schema.ref}: {existing.model} and {model}")
    refs[schema.ref] = schema
    return schema.file


def generate() -> dict[str, str]:
    """Every file of ``contracts/`` (relative path → content), freshly generated."""
    from sdl_core import events, node_models
    from sdl_core.node_app import route_table
    from sdl_core.relay import models as relay_models
    from sdl_core.relay.app import relay_route_specs

    host, relay, scratch = _build_hosts()
    refs: dict[str, SchemaRef] = {}
    for model in node_models.CORE_NODE_MODELS:
        _ref_for(model, "node", CORE, refs)
    for model in _models_of(relay_models):
        _ref_for(model, "relay", CORE, refs)
    _ref_for(events.IntroRevealed, "events", CORE, refs)

    routes: list[dict[str, Any]] = []
    try:
        for mounted in route_table(host):
            if mounted.owner.startswith("skill:"):
                skill = mounted.owner.split(":", 1)[1]
                namespace = skill
                distribution = _distribution(host.pm, "darkmesh_register_skills", skill)
            elif mounted.owner in ("signer", "verifier"):
                namespace = mounted.owner
                hook = f"darkmesh_register_{mounted.owner}s"
                names = [s.name for s in getattr(host.hooks, f"{mounted.owner}s")()]
                distribution = _distribution(host.pm, hook, names[0]) if names else CORE
            else:
                namespace, distribution = "node", CORE
            routes.append(_route_row("node", mounted.path, mounted.spec, namespace,
                                     distribution, mounted.owner, refs))
        for spec in relay_route_specs(relay):
            routes.append(_route_row("relay", spec.path, spec, "relay", CORE, CORE, refs))
        for name, skill in host.skills.items():
            # Messages that travel outside any route (relay posts, sealed mailbox
            # bodies), from a skill's optional ``wire_models()``.
            extra = getattr(skill, "wire_models", None)
            if callable(extra):
                distribution = _distribution(host.pm, "darkmesh_register_skills", name)
                for model in extra():
                    _ref_for(model, name, distribution, refs)
    finally:
        asyncio.run(host.stop())
        scratch.cleanup()

    routes.sort(key=lambda r: (r["side"], r["path"], r["method"]))
    files: dict[str, str] = {}
    for ref in sorted(refs):
        schema = refs[ref]
        body = schema.model.model_json_schema(mode="validation")
        body["$id"] = schema.file
        files[schema.file] = _dump(body)
    files["routes.json"] = _dump({
        "generated_by": GENERATED_BY,
        "routes": routes,
        "schemas": {ref: {"file": refs[ref].file, "distribution": refs[ref].distribution}
                    for ref in sorted(refs)},
    })
    return files


def _route_row(side: str, path: str, spec: Any, namespace: str, distribution: str,
               owner: str, refs: dict[str, SchemaRef]) -> dict[str, Any]:
    methods: Iterable[str] = spec.methods
    return {
        "side": side,
        "method": ",".join(sorted(m.upper() for m in methods)),
        "path": path,
        "capability": spec.capability,
        "bound_field": spec.bound_field,
        "owner": owner,
        "distribution": distribution,
        "request_schema": _ref_for(spec.request_model, namespace, distribution, refs),
        "response_schema": _ref_for(spec.response_model, namespace, distribution, refs),
        "description": spec.description,
    }


def write(files: dict[str, str], root: Path = HERE) -> None:
    """Write ``files`` under ``root``, removing stale schema files."""
    schemas = root / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    keep = {root / name for name in files}
    for stale in schemas.glob("*.json"):
        if stale not in keep:
            stale.unlink()
    for name, content in files.items():
        (root / name).write_text(content, encoding="utf-8")


def drift(files: dict[str, str], root: Path = HERE) -> list[str]:
    """Files whose committed content differs from ``files`` (or that are missing)."""
    out = []
    for name, content in sorted(files.items()):
        path = root / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when contracts/ differs from a fresh generation")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        stale = drift(files)
        for name in stale:
            print(f"contracts/{name} is out of date; run: {GENERATED_BY}", file=sys.stderr)
        return 1 if stale else 0
    write(files)
    print(f"wrote {len(files)} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
