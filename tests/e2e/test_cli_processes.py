"""The operator flow with real processes on 127.0.0.1: init, relay serve, node serve,
status, ingest, and a graceful stop — all through the ``darkmesh`` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdl_core.testing.relay_process import free_port

pytestmark = pytest.mark.e2e

RELAY_KEY = "e2e-relay-key-0123456789"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKMESH_", "NEOTOMA_"))}
    # Built-ins only: this test is about the core's command line and processes.
    env["DARKMESH_LOAD_PLUGINS"] = "darkmesh-none"
    env["HOME"] = str(tmp_path)
    return env


def _darkmesh(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdl_core.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def _spawn(*args: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", "sdl_core.cli", *args], env=env, cwd=cwd,
                            stdout=handle, stderr=subprocess.STDOUT)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not healthy within 20 s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise
    return process.returncode


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "op").mkdir()
    yield tmp_path / "op"


def test_init_serve_status_ingest_and_stop(workdir: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    relay_port, node_port = free_port(), free_port()
    init = _darkmesh("init", "--node-id", "node_e2e", "--port", str(node_port),
                     "--relay-url", f"http://127.0.0.1:{relay_port}", "--relay-key", RELAY_KEY,
                     env=env, cwd=workdir)
    assert init.returncode == 0, init.stderr
    config = tomllib.loads((workdir / "darkmesh.toml").read_text())["node"]
    node_key = config["node_key"]
    assert Path(config["vault_key_file"]).stat().st_mode & 0o777 == 0o600

    relay_env = {**env, "DARKMESH_RELAY_KEY": RELAY_KEY,
                 "DARKMESH_RELAY_DATA_DIR": str(tmp_path / "relay-data")}
    relay = _spawn("relay", "serve", "--port", str(relay_port), "--backend", "sqlite",
                   env=relay_env, cwd=workdir, log=tmp_path / "relay.log")
    node = _spawn("--log-level", "info", "node", "serve", env=env, cwd=workdir,
                  log=tmp_path / "node.log")
    try:
        _wait_healthy(f"http://127.0.0.1:{relay_port}/darkmesh/relay/health", relay,
                      tmp_path / "relay.log")
        _wait_healthy(f"http://127.0.0.1:{node_port}/darkmesh/health", node,
                      tmp_path / "node.log")

        status = _darkmesh("status", "--url", f"http://127.0.0.1:{node_port}", env=env,
                           cwd=workdir)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["integrations"]["ready"] is False

        base = f"http://127.0.0.1:{node_port}"
        headers = {"X-Darkmesh-Key": node_key, "X-Request-Id": "e2e-ingest-1"}
        for dataset, record in (("contacts", {"email": "taylor@companyx.com", "name": "T"}),
                                ("interactions", {"email": "taylor@companyx.com",
                                                  "strength": 3.0})):
            answer = httpx.post(f"{base}/darkmesh/ingest", headers=headers, timeout=10,
                                json={"dataset": dataset, "records": [record]})
            assert answer.json() == {"dataset": dataset, "count": 1}
        ready = _darkmesh("status", "--url", base, env=env, cwd=workdir)
        assert json.loads(ready.stdout)["integrations"]["ready"] is True

        # The listener inside the node registered it on the relay.
        deadline = time.monotonic() + 10
        nodes: list[dict[str, object]] = []
        while time.monotonic() < deadline and not nodes:
            listing = httpx.get(f"http://127.0.0.1:{relay_port}/darkmesh/relay/nodes",
                                headers={"X-Darkmesh-Key": RELAY_KEY}, timeout=5)
            nodes = listing.json().get("nodes", [])
            time.sleep(0.05)
        assert [n["node_id"] for n in nodes] == ["node_e2e"]
    finally:
        node_rc = _stop(node)
        relay_rc = _stop(relay)
    assert node_rc == 0 and relay_rc == 0

    lines = [json.loads(line) for line in (tmp_path / "node.log").read_text().splitlines()
             if line.startswith("{")]
    ingest_lines = [line for line in lines if line.get("request_id") == "e2e-ingest-1"]
    assert ingest_lines and ingest_lines[0]["path"] == "/darkmesh/ingest"
    assert node_key not in (tmp_path / "node.log").read_text()
    assert RELAY_KEY not in (tmp_path / "node.log").read_text()

    # The data survived the restart: the vault is durable.
    node = _spawn("node", "serve", env=env, cwd=workdir, log=tmp_path / "node2.log")
    try:
        _wait_healthy(f"http://127.0.0.1:{node_port}/darkmesh/health", node,
                      tmp_path / "node2.log")
        again = _darkmesh("status", "--url", f"http://127.0.0.1:{node_port}", env=env,
                          cwd=workdir)
        counts = [e["records"] for e in json.loads(again.stdout)["integrations"]
                  ["required_integrations"]]
        assert counts == [1, 1]
    finally:
        assert _stop(node) == 0


def test_node_serve_refuses_a_bad_config_with_one_line(workdir: Path, tmp_path: Path) -> None:
    (workdir / "darkmesh.toml").write_text('[node]\nnode_id = "n"\nauth_mode = "hmac"\n')
    result = _darkmesh("node", "serve", env=_env(tmp_path), cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: auth mode hmac needs DARKMESH_NODE_KEY ([node] node_key)")
