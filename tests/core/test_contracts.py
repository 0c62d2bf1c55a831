"""``contracts/`` must match a fresh generation.

When this fails after a deliberate wire change, regenerate with every distribution
installed (``tox -e all``, or all packages ``pip install -e``'d) and commit the result::

    python contracts/generate.py

In an environment with only some distributions installed (``tox -e core``, one plugin
alone) the committed entries of the distributions present are compared; entries of
absent distributions are left alone.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sdl_core.plugins import _entry_points

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
HOW = "regenerate with: python contracts/generate.py (every distribution installed)"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("darkmesh_contracts_generate",
                                                  CONTRACTS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    files: dict[str, str] = _generator().generate()
    return files


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONTRACTS / "routes.json").read_text(encoding="utf-8"))
    return data


def _installed() -> set[str]:
    names = {"darkmesh-sdl"}
    names.update(ep.dist.metadata["Name"] for ep in _entry_points() if ep.dist is not None)
    return names


def test_route_table_matches_for_installed_distributions(
    fresh: dict[str, str], committed: dict[str, Any]
) -> None:
    installed = _installed()
    expected = [r for r in committed["routes"] if r["distribution"] in installed]
    actual = json.loads(fresh["routes.json"])["routes"]
    assert actual == expected, f"contracts/routes.json is out of date; {HOW}"


def test_schemas_match_for_installed_distributions(
    fresh: dict[str, str], committed: dict[str, Any]
) -> None:
    installed = _installed()
    for entry in committed["schemas"].values():
        if entry["distribution"] in installed:
            assert entry["file"] in fresh, f"contracts/{entry['file']} is stale; {HOW}"
    for name, content in fresh.items():
        if name == "routes.json":
            continue
        path = CONTRACTS / name
        assert path.exists(), f"contracts/{name} is missing; {HOW}"
        assert path.read_text(encoding="utf-8") == content, f"contracts/{name} drifted; {HOW}"
    fresh_index = json.loads(fresh["routes.json"])["schemas"]
    for ref, entry in fresh_index.items():
        assert committed["schemas"].get(ref) == entry, f"schema index entry {ref}; {HOW}"


def test_every_route_declares_a_capability_and_core_routes_are_listed(
    committed: dict[str, Any]
) -> None:
    rows = {(r["side"], r["method"], r["path"]): r for r in committed["routes"]}
    for row in committed["routes"]:
        assert row["capability"], row
    # wire-v1 §3.1-3.5 and aauth §4.1, exactly.
    assert rows[("node", "GET", "/darkmesh/health")]["capability"] == "public"
    for path in ("/darkmesh/capabilities", "/darkmesh/node/card",
                 "/darkmesh/integrations/status", "/darkmesh/plugins", "/darkmesh/metrics"):
        assert rows[("node", "GET", path)]["capability"] == "node.query", path
    assert rows[("node", "POST", "/darkmesh/ingest")]["capability"] == "node.ingest"
    assert rows[("node", "POST", "/darkmesh/ingest")]["request_schema"] == (
        "schemas/node.IngestRequest.json")
    assert rows[("relay", "GET", "/darkmesh/relay/health")]["capability"] == "public"


def test_schema_files_are_valid_json_schemas_with_ids(committed: dict[str, Any]) -> None:
    for ref, entry in committed["schemas"].items():
        body = json.loads((CONTRACTS / entry["file"]).read_text(encoding="utf-8"))
        assert body["$id"] == entry["file"]
        assert body.get("type") == "object" or "$defs" in body or "properties" in body, ref


def test_check_mode_reports_drift(tmp_path: Path, fresh: dict[str, str]) -> None:
    generator = _generator()
    generator.write(fresh, tmp_path)
    assert generator.drift(fresh, tmp_path) == []
    (tmp_path / "routes.json").write_text("{}\n")
    assert generator.drift(fresh, tmp_path) == ["routes.json"]
