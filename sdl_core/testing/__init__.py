"""Testing kit for plugin authors (opt-in pytest plugin: ``-p sdl_core.testing``).

Public pieces, each imported from its module so that loading this pytest plugin stays
cheap:

* :func:`sdl_core.testing.host.make_host` — a fresh, unstarted node host;
* :class:`sdl_core.testing.mesh.InProcessMesh` — a relay and N nodes over
  ``httpx.ASGITransport``, no sockets;
* contract suites: ``StoreContract``, ``RelayBackendContract``
  (``sdl_core.testing.store_contract`` / ``relay_contract``),
  :class:`sdl_core.testing.signer_contract.SignerContract`,
  :class:`sdl_core.testing.skill_contract.SkillContract`.

Fixtures this plugin provides:

* ``darkmesh_clean_env`` — removes every ``DARKMESH_*`` / ``NEOTOMA_*`` variable and
  ``DARKMESH_CONFIG`` for the test, and runs it in a temporary working directory (no
  stray ``./darkmesh.toml``);
* ``tmp_node_settings`` — keyword overrides for :func:`make_host` /
  ``NodeSettings`` with ``data_dir`` and ``vault_key_file`` under ``tmp_path``.

It also registers the Hypothesis profile ``darkmesh`` (opt in with
``--hypothesis-profile=darkmesh``, as this repository's own suites do): no per-example
``deadline`` and no ``too_slow`` health check. Both measure the machine rather than the
code and trip at random on a busy CI runner; speed belongs in benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_ENV_PREFIXES = ("DARKMESH_", "NEOTOMA_")
HYPOTHESIS_PROFILE = "darkmesh"


def _register_hypothesis_profile() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the kit works without Hypothesis; only its profile is missing
        return
    settings.register_profile(
        HYPOTHESIS_PROFILE, deadline=None, suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )


_register_hypothesis_profile()


@pytest.fixture
def darkmesh_clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No Darkmesh variable from the developer's shell reaches the test."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    yield


@pytest.fixture
def tmp_node_settings(tmp_path: Path) -> dict[str, Any]:
    """Node settings overrides rooted in ``tmp_path`` (key file outside the data dir)."""
    from sdl_core.testing.host import node_overrides

    return node_overrides(
        node_id="test-node",
        data_dir=str(tmp_path / "data"),
        vault_key_file=str(tmp_path / "keys" / "vault.key"),
    )
