"""Every plugin installed together (STYLE.md §7 "Together"; runs in tox's ``all`` env).

The expected set comes from the checkout: each distribution's ``pyproject.toml`` and its
``[project.entry-points.darkmesh]`` table, so a plugin folder that is not installed, or
installed from stale metadata, fails here by name.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from sdl_core import Host
from sdl_core.catalog import SPEC_HOOKS, settings_models, specs_by_plugin
from sdl_core.node_app import create_node_app
from sdl_core.plugins import BUILTIN_PREFIX, HostHooks, make_plugin_manager, plugin_infos
from sdl_core.settings import NodeSettings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-c", "from sdl_core.cli import main; main()")
NODE_KEY = "all-plugins-node-key-0123456789"


def _distributions() -> dict[str, dict[str, str]]:
    """``{distribution name: {entry-point name: target}}`` for every pyproject here."""
    found: dict[str, dict[str, str]] = {}
    for pyproject in [ROOT / "pyproject.toml", *sorted(ROOT.glob("*/*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        found[project["name"]] = dict(project.get("entry-points", {}).get("darkmesh", {}))
    return found


DISTRIBUTIONS = _distributions()
PLUGINS = {name for name in DISTRIBUTIONS if name != "darkmesh-sdl"}
BUILTINS = set(DISTRIBUTIONS["darkmesh-sdl"])
EVERY_ENTRY_POINT = {ep for eps in DISTRIBUTIONS.values() for ep in eps}


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DARKMESH_", "NEOTOMA_"))}
    base["HOME"] = str(cwd)
    return subprocess.run([*CLI, *args], env=base | (env or {}), cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


def test_the_checkout_has_the_distributions_of_the_design() -> None:
    assert PLUGINS >= {"darkmesh-warm-intro", "darkmesh-writer-tier", "darkmesh-aauth",
                       "darkmesh-neotoma", "darkmesh-redis"}
    for name in PLUGINS:
        # One entry point per plugin distribution, named after it (STYLE.md §2).
        assert list(DISTRIBUTIONS[name]) == [name], name
    assert all(ep.startswith(BUILTIN_PREFIX) for ep in BUILTINS)


def test_every_plugin_loads_together_and_passes_check_pending() -> None:
    # make_plugin_manager ends with pm.check_pending(): a misspelt hookimpl raises here.
    pm = make_plugin_manager(environ={})
    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert loaded == EVERY_ENTRY_POINT
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group="darkmesh")}
    for name in PLUGINS:
        dist = installed[name].dist
        assert dist is not None and dist.metadata["Name"] == name
        assert installed[name].value == DISTRIBUTIONS[name][name]
    infos = {info.name: info for info in plugin_infos(pm)}
    assert {n for n, i in infos.items() if i.builtin} == BUILTINS
    assert all(infos[n].hooks for n in EVERY_ENTRY_POINT), "a plugin implements no hook"


def test_spec_names_are_unique_across_all_plugins() -> None:
    pm = make_plugin_manager(environ={})
    hooks = HostHooks(pm)
    # The facade refuses a name registered twice (PluginConflictError); call every kind.
    for method in ("stores", "signers", "verifiers", "transports", "relay_backends", "skills",
                   "connectors", "subscribers", "commands", "capabilities"):
        getattr(hooks, method)()
    per_kind: dict[str, Counter[str]] = {kind: Counter() for kind in SPEC_HOOKS}
    for kinds in specs_by_plugin(pm).values():
        for kind, names in kinds.items():
            per_kind[kind].update(names)
    duplicates = {kind: [n for n, c in names.items() if c > 1] for kind, names in
                  per_kind.items() if any(c > 1 for c in names.values())}
    assert duplicates == {}
    # Every installed plugin registers something.
    assert set(specs_by_plugin(pm)) == EVERY_ENTRY_POINT


@pytest.mark.asyncio
@pytest.mark.usefixtures("darkmesh_clean_env")
async def test_a_node_with_every_plugin_mounts_unique_routes(tmp_path: Path) -> None:
    host = _node(tmp_path, {})
    app = create_node_app(host)
    pairs = [(m, r.path) for r in app.routes if isinstance(r, Route) for m in (r.methods or ())]
    assert [p for p, c in Counter(pairs).items() if c > 1] == []
    paths = {path for _, path in pairs}
    for skill in host.hooks.skills():
        assert any(p.startswith(f"/darkmesh/skills/{skill.name}/") for p in paths), skill.name
    await host.start()
    try:
        async with _client(app) as http:
            assert (await http.get("/darkmesh/health")).status_code == 200
    finally:
        await host.stop()


@pytest.mark.asyncio
@pytest.mark.usefixtures("darkmesh_clean_env")
async def test_disabling_the_warm_intro_hides_it_while_the_core_works(tmp_path: Path) -> None:
    host = _node(tmp_path, {"DARKMESH_DISABLE_PLUGINS": "darkmesh-warm-intro"})
    app = create_node_app(host)
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    assert not [p for p in paths if "warm-intro" in p]
    assert "warm-intro" not in {s.name for s in host.hooks.skills()}
    assert not {"intro", "demo"} & {c.name for c in host.hooks.commands()}
    await host.start()
    try:
        async with _client(app) as http:
            assert (await http.get("/darkmesh/health")).status_code == 200
            ingest = await http.post("/darkmesh/ingest", json={
                "dataset": "contacts", "records": [{"email": "a@b.test", "name": "A"}]})
            assert ingest.json() == {"dataset": "contacts", "count": 1}
            served = (await http.get("/darkmesh/capabilities")).json()["capabilities"]
            assert served == host.templates()
            assert not [t for t in served if t.startswith("warm_intro")]
            gone = await http.post("/darkmesh/skills/warm-intro/request",
                                   json={"target": {"company": "X"}})
            assert gone.status_code == 404
    finally:
        await host.stop()


def test_disable_switch_on_the_command_line(tmp_path: Path) -> None:
    env = {"DARKMESH_DISABLE_PLUGINS": "darkmesh-warm-intro"}
    listing = json.loads(cli("plugins", "--json", env=env, cwd=tmp_path).stdout)
    assert {e["name"] for e in listing} == EVERY_ENTRY_POINT - {"darkmesh-warm-intro"}
    helped = cli("--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0
    commands = {line.split()[0] for line in helped.stdout.split("Commands:")[1].splitlines()
                if line.strip()}
    assert "intro" not in commands and "demo" not in commands
    assert {"keygen", "trust", "node", "relay", "ingest"} <= commands
    refused = cli("intro", "pending", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "No such command 'intro'" in refused.stderr
    # Without the switch the same command exists.
    assert "intro" in cli("--help", cwd=tmp_path).stdout


def test_load_switch_keeps_only_that_plugin_and_the_builtins(tmp_path: Path) -> None:
    pm = make_plugin_manager(environ={"DARKMESH_LOAD_PLUGINS": "darkmesh-aauth"})
    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert loaded == BUILTINS | {"darkmesh-aauth"}
    listing = json.loads(cli("plugins", "--json", env={"DARKMESH_LOAD_PLUGINS":
                                                       "darkmesh-aauth"}, cwd=tmp_path).stdout)
    assert {e["name"] for e in listing} == BUILTINS | {"darkmesh-aauth"}
    # Built-ins still obey the block list under an allow list.
    pm = make_plugin_manager(environ={"DARKMESH_LOAD_PLUGINS": "darkmesh-aauth",
                                      "DARKMESH_DISABLE_PLUGINS": "darkmesh-sdl.mcp"})
    assert {n for n, p in pm.list_name_plugin() if p is not None} == \
        (BUILTINS - {"darkmesh-sdl.mcp"}) | {"darkmesh-aauth"}


def test_plugins_json_lists_every_distribution_and_builtin(tmp_path: Path) -> None:
    result = cli("plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert set(listing) == EVERY_ENTRY_POINT
    for name in PLUGINS:
        entry = listing[name]
        assert (entry["distribution"], entry["builtin"]) == (name, False)
        assert entry["version"] == importlib.metadata.version(name)
        assert entry["specs"], f"{name} lists no spec names"
    for name in BUILTINS:
        assert (listing[name]["distribution"], listing[name]["builtin"]) == (
            "darkmesh-sdl", True)
    # Spot-check the names each distribution registers.
    assert listing["darkmesh-aauth"]["specs"]["signer"] == ["aauth"]
    assert listing["darkmesh-warm-intro"]["specs"]["skill"] == ["warm-intro"]
    assert listing["darkmesh-redis"]["specs"]["relay_backend"] == ["redis"]
    assert listing["darkmesh-neotoma"]["specs"]["store"] == ["neotoma"]


def test_settings_json_lists_every_plugin_with_secrets_redacted(tmp_path: Path) -> None:
    pm = make_plugin_manager(environ={})
    models = settings_models(pm)
    owners_with_settings = {m.owner for m in models}
    # A distinct secret in every SecretStr field of every model, through its variable.
    secrets: dict[str, str] = {}
    for entry in models:
        for name, info in entry.model.model_fields.items():
            if "SecretStr" in str(info.annotation):
                secrets[env_name(entry.model, name)] = f"sentinel-{len(secrets):02d}-s3cr3t"
    assert len(secrets) >= 4  # node, relay, neotoma and aauth keys at least
    result = cli("settings", "--json", env=secrets, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    described = json.loads(result.stdout)
    assert {m["owner"] for m in described} == owners_with_settings
    assert {m["section"] for m in described} >= {"node", "relay", "warm_intro", "aauth",
                                                  "neotoma", "redis", "writer_tier"}
    by_env = {f["env"]: f for m in described for f in m["fields"]}
    for variable in secrets:
        field = by_env[variable]
        assert field["secret"] is True and field["current"] == "**********", variable
    for model in described:
        for f in model["fields"]:
            assert f["description"], f"{model['section']}.{f['name']} has no description"


# ---------------------------------------------------------------------------- helpers


def _node(tmp_path: Path, environ: dict[str, str]) -> Host:
    """A node with every installed plugin (minus the switches in ``environ``)."""
    pm = make_plugin_manager(environ=environ)
    settings = load_settings(NodeSettings, {}, overrides={
        "node_id": "all_plugins", "store": "memory", "auth_mode": "hmac",
        "node_key": NODE_KEY, "peer_key": "all-plugins-peer-key-0123", "listener": False,
        "data_dir": str(tmp_path / "data"),
    })
    return Host(pm, settings, {})


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node.test",
                             headers={"X-Darkmesh-Key": NODE_KEY})
