"""Meta-tests: every hook is typed, documented, exercised and in docs/plugin_hooks.md.

A new hook goes into the core with five things: the spec with its docstring, a
``HostHooks`` method, a test (listed in ``EXERCISED_BY``), a docs section headed by its
exact signature with a runnable example, and "Implemented by:" naming the plugins that
implement it. These tests fail until all five exist.
"""

from __future__ import annotations

import ast
import inspect
import re
import types
from pathlib import Path

import pytest

from sdl_core import hookspecs, make_plugin_manager
from sdl_core.errors import PluginLoadError
from sdl_core.plugins import HostHooks, _entry_points

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "plugin_hooks.md"

HOOKS = sorted(
    name for name, value in vars(hookspecs).items()
    if name.startswith("darkmesh_") and inspect.isfunction(value)
)

#: hook -> tests that exercise it ("<path from repo root>::<test function>").
EXERCISED_BY: dict[str, list[str]] = {
    "darkmesh_register_stores": [
        "tests/core/test_plugins.py::test_temporary_plugin_records_are_collected",
        "tests/core/test_settings.py::test_host_validates_the_selected_plugin_settings_naming_the_plugin",
    ],
    "darkmesh_register_signers": [
        "tests/core/test_node_app.py::test_signer_routes_are_mounted_at_their_absolute_path",
    ],
    "darkmesh_register_verifiers": [
        "tests/core/test_hooks.py::test_verifier_decides_signed_requests_and_capabilities",
    ],
    "darkmesh_register_transports": [
        "tests/core/test_hooks.py::test_transport_setting_selects_the_registered_transport",
        "tests/core/test_plugins.py::test_entry_point_plugin_is_discovered",
    ],
    "darkmesh_register_relay_backends": [
        "tests/core/test_hooks.py::test_relay_backend_setting_selects_the_registered_backend",
    ],
    "darkmesh_register_skills": [
        "tests/core/test_node_app.py::test_skill_routes_are_mounted_and_guarded",
    ],
    "darkmesh_register_connectors": [
        "tests/core/test_cli.py::test_plugin_commands_top_level_merged_group_and_ingest",
    ],
    "darkmesh_register_subscribers": [
        "tests/core/test_hooks.py::test_subscribers_receive_events_and_failures_do_not_propagate",
    ],
    "darkmesh_register_commands": [
        "tests/core/test_cli.py::test_plugin_commands_top_level_merged_group_and_ingest",
    ],
    "darkmesh_register_capabilities": [
        "tests/core/test_hooks.py::test_declared_capability_is_accepted_on_a_skill_route",
        "tests/core/test_plugins.py::test_capabilities_may_be_declared_twice_in_pluggy_order",
    ],
    "darkmesh_startup": [
        "tests/core/test_hooks.py::test_startup_and_shutdown_run_sync_and_async_in_order",
    ],
    "darkmesh_shutdown": [
        "tests/core/test_hooks.py::test_startup_and_shutdown_run_sync_and_async_in_order",
    ],
}


def _signature(hook: str) -> str:
    params = inspect.signature(getattr(hookspecs, hook)).parameters
    return f"{hook}({', '.join(params)})"


def _sections() -> dict[str, str]:
    """Docs sections keyed by their heading (the exact hook signature)."""
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] for part in parts}


def test_hooks_found() -> None:
    assert len(HOOKS) == 12
    assert "darkmesh_startup" in HOOKS and "darkmesh_register_stores" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_is_annotated(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    sig = inspect.signature(spec)
    assert sig.return_annotation is not inspect.Signature.empty, hook
    for name, param in sig.parameters.items():
        assert param.annotation is not inspect.Parameter.empty, f"{hook}({name})"
        assert param.default is inspect.Parameter.empty, f"{hook}({name}) has a default"


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_follows_the_house_style(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert doc.splitlines()[0].endswith("."), f"{hook}: one-line summary first"
    for name in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f":param {name}:" in doc, f"{hook}: :param {name}: missing"
    assert ":returns:" in doc, f"{hook}: :returns: missing"
    assert ".. versionadded::" in doc, f"{hook}: .. versionadded:: missing"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_facade_method(hook: str) -> None:
    source = inspect.getsource(HostHooks)
    assert f'"{hook}"' in source or f"hook.{hook}" in source, f"HostHooks never calls {hook}"


def test_docs_open_with_the_subset_rule() -> None:
    text = DOCS.read_text(encoding="utf-8")
    first_paragraph = text.split("\n\n")[1]
    assert "accept any subset of the parameters; never give them defaults" in first_paragraph


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docs_section_with_its_exact_signature(hook: str) -> None:
    sections = _sections()
    assert _signature(hook) in sections, f"docs/plugin_hooks.md: no '## {_signature(hook)}'"
    body = sections[_signature(hook)]
    assert "```python" in body, f"{hook}: no example"
    assert "Implemented by:" in body, f"{hook}: no 'Implemented by:'"
    for name in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f"`{name}`" in body, f"{hook}: parameter {name} undocumented"


def test_docs_have_no_section_for_a_hook_that_does_not_exist() -> None:
    assert set(_sections()) == {_signature(h) for h in HOOKS}


@pytest.mark.parametrize("hook", HOOKS)
def test_docs_example_is_runnable_and_registers(hook: str) -> None:
    body = _sections()[_signature(hook)]
    code = re.search(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert code is not None
    module = types.ModuleType(f"docs_example_{hook}")
    # Running the documented example is the point of this test.
    exec(compile(code.group(1), f"docs/plugin_hooks.md#{hook}", "exec"), module.__dict__)
    assert hasattr(module, hook), f"the {hook} example does not implement {hook}"
    pm = make_plugin_manager(entry_points=False, plugins=[module])  # validates the impl
    impls = getattr(pm.hook, hook).get_hookimpls()
    assert [i.plugin_name for i in impls] == [module.__name__]
    if hook.startswith("darkmesh_register_"):
        records = list(impls[0].function())
        assert records and all(getattr(r, "name", "") for r in records)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_an_existing_test(hook: str) -> None:
    assert EXERCISED_BY.get(hook), f"{hook}: add its tests to EXERCISED_BY"
    for ref in EXERCISED_BY[hook]:
        path, _, name = ref.partition("::")
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        names = {n.name for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert name in names, f"{ref} does not exist"
        source = (ROOT / path).read_text(encoding="utf-8")
        assert hook in source, f"{path} never mentions {hook}"


def test_implemented_by_names_every_installed_implementation() -> None:
    """Each installed plugin that implements a hook is named in that hook's section.

    Plugins that fail to load are skipped here: start-up already refuses them, naming
    them (test_plugins.py), and a half-installed tree must not hide the other checks.
    """
    sections = _sections()
    checked = 0
    for ep in _entry_points():
        try:
            pm = make_plugin_manager(only={ep.name}, environ={})
        except PluginLoadError:
            continue
        for hook in HOOKS:
            if any(i.plugin_name == ep.name for i in getattr(pm.hook, hook).get_hookimpls()):
                line = sections[_signature(hook)].split("Implemented by:", 1)[1]
                assert ep.name in line.split("\n\n")[0], (
                    f"docs/plugin_hooks.md: {_signature(hook)} 'Implemented by:' lacks {ep.name}")
                checked += 1
    assert checked >= 1
