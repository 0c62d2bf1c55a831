"""A relay and N nodes as real processes on loopback, for ``darkmesh demo``, the
end-to-end tests and ``bench/intro.py``.

Each process is ``darkmesh --config <generated toml> relay|node serve`` (the core
CLI) on a free 127.0.0.1 port, in a temporary directory removed on :meth:`close`.
Only the processes this object started are ever stopped, by their own handles.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Self

import httpx
import tomli_w

SKILL = "/darkmesh/skills/warm-intro"
START_TIMEOUT_SECONDS = 30.0
#: The core CLI entry, run with this interpreter (no reliance on PATH).
CLI = (sys.executable, "-c", "from sdl_core.cli import main; main()")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_toml(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> None:
    path.write_text(tomli_w.dumps({name: dict(table) for name, table in tables.items()}),
                    encoding="utf-8")


def demo_rows(name: str) -> list[dict[str, Any]]:
    """A CSV shipped in ``darkmesh_warm_intro/demo_data`` as a list of records."""
    text = resources.files("darkmesh_warm_intro").joinpath("demo_data", name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@dataclass
class NodeProcess:
    node_id: str
    url: str
    config: Path
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class LocalCluster:
    """Start with :meth:`start_relay` and :meth:`start_node`, stop with :meth:`close`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="darkmesh-")))
    node_key: str = field(default_factory=lambda: secrets.token_hex(16))
    relay_key: str = field(default_factory=lambda: secrets.token_hex(16))
    peer_key: str = field(default_factory=lambda: secrets.token_hex(16))
    relay_url: str = ""
    relay: subprocess.Popen[bytes] | None = None
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    plugins: tuple[str, ...] = ("darkmesh-warm-intro",)
    #: Extra environment for the processes (e.g. ``DARKMESH_DISABLE_PLUGINS``).
    env: dict[str, str] = field(default_factory=dict)

    def _environment(self) -> dict[str, str]:
        # The generated config is the whole truth: no DARKMESH_* of the caller's shell
        # leaks in, and only this skill's plugin is loaded besides the core built-ins;
        # the caller's DARKMESH_DISABLE_PLUGINS still blocks a broken plugin.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DARKMESH_", "NEOTOMA_")) or k == "DARKMESH_DISABLE_PLUGINS"}
        env["DARKMESH_LOAD_PLUGINS"] = ",".join(self.plugins)
        env.update(self.env)
        return env

    def _spawn(self, config: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
        handle = log.open("ab")
        try:
            return subprocess.Popen([*CLI, "--config", str(config), "--log-level", "warning",
                                     *args], stdout=handle, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.root,
                                    env=self._environment())
        finally:
            handle.close()

    def start_relay(self) -> str:
        port = free_port()
        config = self.root / "relay.toml"
        write_toml(config, {"relay": {
            "host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
            "key": self.relay_key, "auth_mode": "hmac", "backend": "sqlite",
            "data_dir": str(self.root / "relay-data"),
        }})
        self.relay = self._spawn(config, "relay", "serve", log=self.root / "relay.log")
        self.relay_url = f"http://127.0.0.1:{port}"
        self._wait_health(f"{self.relay_url}/darkmesh/relay/health", self.relay, "relay")
        return self.relay_url

    def start_node(self, node_id: str, *, self_identifiers: Sequence[str] = (),
                   warm_intro: Mapping[str, Any] | None = None,
                   peers: Sequence[Mapping[str, Any]] = (), port: int | None = None,
                   wait: bool = True) -> NodeProcess:
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        config = self.root / f"{node_id}.toml"
        write_toml(config, {
            "node": {
                "node_id": node_id, "host": "127.0.0.1", "port": port, "listen_url": url,
                "relay_url": self.relay_url, "relay_key": self.relay_key,
                "node_key": self.node_key, "peer_key": self.peer_key, "auth_mode": "hmac",
                "store": "vault", "data_dir": str(self.root / node_id / "data"),
                "vault_key_file": str(self.root / node_id / "keys" / "vault.key"),
                "self_identifiers": list(self_identifiers), "log_format": "text",
                "peers": [dict(peer) for peer in peers],
            },
            "warm_intro": dict(warm_intro or {}),
        })
        process = self._spawn(config, "node", "serve", log=self.root / f"{node_id}.log")
        node = NodeProcess(node_id=node_id, url=url, config=config, process=process,
                           log=self.root / f"{node_id}.log")
        self.nodes[node_id] = node
        if wait:
            self.wait_healthy(node_id)
        return node

    def restart_node(self, node_id: str) -> NodeProcess:
        """Stop one node (SIGTERM, graceful) and start it again on the same config."""
        node = self.nodes[node_id]
        node.process.terminate()
        try:
            node.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=5)
        node.process = self._spawn(node.config, "node", "serve", log=node.log)
        self.wait_healthy(node_id)
        return node

    def wait_healthy(self, node_id: str) -> None:
        node = self.nodes[node_id]
        self._wait_health(f"{node.url}/darkmesh/health", node.process, node_id)

    def _wait_health(self, url: str, process: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}: "
                                   f"{self._tail(what)}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{what} did not become healthy within {START_TIMEOUT_SECONDS}s")

    def _tail(self, what: str) -> str:
        log = self.root / f"{what}.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def client(self, node_id: str, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.nodes[node_id].url, timeout=timeout,
                            headers={"X-Darkmesh-Key": self.node_key})

    def ingest(self, node_id: str, dataset: str, records: list[dict[str, Any]]) -> int:
        with self.client(node_id) as http:
            response = http.post("/darkmesh/ingest", json={"dataset": dataset,
                                                           "records": records})
            response.raise_for_status()
            return int(response.json()["count"])

    def start_demo(self, self_identifiers: Mapping[str, str], *,
                   warm_intro: Mapping[str, Any] | None = None) -> Self:
        """Start the relay and one node per ``{node_id: own email}``, load each node's
        demo data (``<node_id>_contacts.csv`` / ``_interactions.csv``), and wait until
        every node is registered at the relay."""
        self.start_relay()
        for node_id, me in self_identifiers.items():
            self.start_node(node_id, self_identifiers=[me], warm_intro=warm_intro, wait=False)
        for node_id in self_identifiers:
            self.wait_healthy(node_id)
            self.ingest(node_id, "contacts", demo_rows(f"{node_id}_contacts.csv"))
            self.ingest(node_id, "interactions", demo_rows(f"{node_id}_interactions.csv"))
        self.wait_registered(len(self_identifiers))
        return self

    def wait_registered(self, count: int, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until ``count`` nodes are in the relay registry (so they count as live)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.relay_url}/darkmesh/relay/nodes", timeout=2.0,
                                 headers={"X-Darkmesh-Key": self.relay_key})
            if response.status_code == 200 and len(response.json().get("nodes", [])) >= count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"fewer than {count} nodes registered at the relay")

    def close(self) -> None:
        """Stop every process this cluster started and remove its directory."""
        processes = [n.process for n in self.nodes.values()]
        if self.relay is not None:
            processes.append(self.relay)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
