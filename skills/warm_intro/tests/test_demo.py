"""``darkmesh demo`` as a user runs it: real processes, exit status 0, the expected intro."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_demo_runs_end_to_end(protocol: str, tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DARKMESH_") or k == "DARKMESH_DISABLE_PLUGINS"}
    env["DARKMESH_LOAD_PLUGINS"] = "darkmesh-warm-intro"
    result = subprocess.run(
        [sys.executable, "-c", "from sdl_core.cli import main; main()", "demo",
         "--protocol", protocol],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path), check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "1 candidate(s)" in out and "score 0.904" in out
    assert "Taylor BD (Business Development, Company X) via node_b" in out
    assert "B's operator approves" in out and "processes stopped" in out
    assert " ms" in out  # latencies are printed
