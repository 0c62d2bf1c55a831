"""Ingest benchmark: contacts through a real node's HTTP API into its store.

Starts a node process on 127.0.0.1 (``Host.create`` + ``create_node_app`` +
``run_app``), POSTs contacts to ``/darkmesh/ingest`` in batches exactly as
``darkmesh ingest csv`` does, and reports records per second for a small and a large
run on fresh nodes, so the growth can be checked for linearity. The same runs against
a node on the in-memory store are the baseline: the difference is the vault's cost
(SQLite with fsync on commit, AES-GCM per record). For the large vault run it also
compares the first and the last batches: with ingest linear in the records given,
the last batch (into a vault already holding most of the records) costs about what
the first did.

    python bench/ingest.py [--records 100000] [--small 10000] [--batch-size 5000]
                           [--output result.json] [--no-baseline]

Prints one JSON object. Exit status 1 when the large vault run misses the target
(100,000 records in under 20 s by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

NODE_KEY = "bench-node-key"

LAUNCHER = """
import json, sys
from sdl_core import Host, make_plugin_manager
from sdl_core.node_app import create_node_app
from sdl_core.serving import run_app

conf = json.loads(sys.argv[1])
pm = make_plugin_manager(only={"darkmesh-sdl.vault", "darkmesh-sdl.memory-store",
                               "darkmesh-sdl.http"})
host = Host.create(overrides=conf["overrides"], pm=pm)
run_app(create_node_app(host), host="127.0.0.1", port=conf["port"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """One node on loopback in its own process and directory."""

    def __init__(self, workdir: Path, store: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        overrides = {
            "node_id": f"bench_{store}",
            "port": self.port,
            "listen_url": self.url,
            "store": store,
            "data_dir": str(workdir / "data"),
            "vault_key_file": str(workdir / "keys" / "vault.key"),
            "node_key": NODE_KEY,
            "auth_mode": "hmac",
            "listener": False,
            "ingest_max_records": 50_000,
        }
        # The node must not pick up the caller's settings file or environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DARKMESH_")}
        self.log = (workdir / "node.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, json.dumps({"port": self.port,
                                                         "overrides": overrides})],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}; see "
                                   f"{self.workdir / 'node.log'}")
            try:
                if httpx.get(self.url + "/darkmesh/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"node did not answer /darkmesh/health within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def contacts(n: int) -> list[dict[str, Any]]:
    return [{"name": f"Contact {i}", "email": f"contact{i}@example{i % 97}.com",
             "org": f"Company {i % 500}", "role": ("Business Development", "Engineer",
                                                  "Advisor")[i % 3],
             "strength": round((i % 100) / 100, 2)} for i in range(n)]


def ingest(url: str, records: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """POST ``records`` in batches; time the whole run and every batch."""
    batch_seconds: list[float] = []
    count = 0
    with httpx.Client(timeout=120, headers={"X-Darkmesh-Key": NODE_KEY}) as client:
        started = time.perf_counter()
        for start in range(0, len(records), batch_size):
            batch = records[start:start + batch_size]
            t0 = time.perf_counter()
            body = json.dumps({"dataset": "contacts", "records": batch},
                              separators=(",", ":")).encode()
            response = client.post(url + "/darkmesh/ingest", content=body,
                                   headers={"Content-Type": "application/json"})
            batch_seconds.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"ingest answered {response.status_code}: "
                                   f"{response.text[:300]}")
            count = int(response.json()["count"])
        seconds = time.perf_counter() - started
    if count != len(records):
        raise RuntimeError(f"node reports {count} contacts after ingesting {len(records)}")
    return {"records": len(records), "seconds": round(seconds, 3),
            "records_per_second": round(len(records) / seconds), "batches": len(batch_seconds),
            "batch_seconds": batch_seconds}


def run(store: str, n: int, batch_size: int, base: Path) -> dict[str, Any]:
    node = NodeProcess(base / f"{store}-{n}", store)
    try:
        node.wait_ready()
        result = ingest(node.url, contacts(n), batch_size)
    finally:
        node.stop()
    return {"store": store, **result}


def summarise(result: dict[str, Any], window: int) -> dict[str, Any]:
    """The run without per-batch detail, plus first/last ``window`` batches' time."""
    batches = result.pop("batch_seconds")
    k = max(1, min(window, len(batches) // 2))
    result["first_batches_seconds"] = round(sum(batches[:k]), 3)
    result["last_batches_seconds"] = round(sum(batches[-k:]), 3)
    result["batches_compared"] = k
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--target-seconds", type=float, default=20.0)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    window = max(1, args.small // args.batch_size)
    stores = ["vault"] + ([] if args.no_baseline else ["memory"])
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="darkmesh-bench-") as tmp:
        for store in stores:
            runs[store] = {n: summarise(run(store, n, args.batch_size, Path(tmp)), window)
                           for n in (args.small, args.records)}

    vault_small, vault_large = runs["vault"][args.small], runs["vault"][args.records]
    report: dict[str, Any] = {
        "benchmark": "ingest contacts via POST /darkmesh/ingest on 127.0.0.1",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "batch_size": args.batch_size,
        "vault": [vault_small, vault_large],
        "linearity": {
            "records_ratio": args.records / args.small,
            "time_ratio": round(vault_large["seconds"] / vault_small["seconds"], 2),
            "last_vs_first_batches": round(vault_large["last_batches_seconds"]
                                           / vault_large["first_batches_seconds"], 2),
        },
        "target": {"records": args.records, "max_seconds": args.target_seconds,
                   "seconds": vault_large["seconds"],
                   "met": vault_large["seconds"] < args.target_seconds},
    }
    if "memory" in runs:
        memory_large = runs["memory"][args.records]
        report["baseline"] = {
            "store": "memory",
            "runs": [runs["memory"][args.small], memory_large],
            "vault_overhead_ratio": round(vault_large["seconds"] / memory_large["seconds"], 2),
        }
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0 if report["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
