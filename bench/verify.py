"""Verified requests per second on one core, against an unsigned baseline in the same run.

Two levels, each signed-vs-unsigned in the same process:

* verifier: ``AAuthVerifier.verify`` (signature check + registry lookup + replay cache)
  over distinct pre-signed requests, with an in-memory replay cache and with the node's
  durable SQLite replay cache; baseline: the shared-key check an unsigned request gets.
* node app: ``GET /darkmesh/capabilities`` through the real node app in-process
  (``httpx.ASGITransport``): signed in ``aauth`` mode vs unsigned with the node key in
  ``hmac`` mode.

Signing is done before the clock starts. Run: ``python bench/verify.py [--n 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from darkmesh_aauth.registry import TrustRegistry
from darkmesh_aauth.testing import MemoryReplayCache, inbound, new_agent, write_trust_file
from darkmesh_aauth.verifier import AAuthVerifier

from sdl_core.node_app import create_node_app
from sdl_core.state import NodeDatabase, StateArea
from sdl_core.testing.host import TEST_BUILTINS, TEST_NODE_KEY, make_host

AUTHORITY = "localhost:8001"
URL = f"http://{AUTHORITY}/darkmesh/capabilities"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


async def bench_verifier(n: int, alg: str, workdir: Path) -> dict[str, float]:
    agents = [new_agent(alg, sub=f"darkmesh-node@n{i}") for i in range(50)]  # type: ignore[arg-type]
    registry = TrustRegistry(write_trust_file(workdir / f"registry-{alg}.json", agents))
    verifier = AAuthVerifier(registry)
    signer = agents[7]
    requests = [inbound("GET", URL, signer.sign("GET", URL)) for _ in range(n)]

    memory = MemoryReplayCache()
    start = time.perf_counter()
    for request in requests:
        await verifier.verify(request, authorities=[AUTHORITY], remember_once=memory)
    memory_rate = rate(n, time.perf_counter() - start)

    # Same requests again against a fresh durable cache (WAL, synchronous=FULL).
    db = NodeDatabase(workdir / f"node-{alg}.db")
    area = StateArea(db, "aauth-replay")

    async def durable(key: str, ttl: float) -> bool:
        return area.remember_once(key, ttl)

    fresh = [inbound("GET", URL, signer.sign("GET", URL)) for _ in range(n)]
    start = time.perf_counter()
    for request in fresh:
        await verifier.verify(request, authorities=[AUTHORITY], remember_once=durable)
    durable_rate = rate(n, time.perf_counter() - start)
    db.close()

    # Unsigned baseline: what an unsigned request costs the guard (shared-key check).
    plain = [inbound("GET", URL, {"X-Darkmesh-Key": TEST_NODE_KEY}) for _ in range(n)]
    start = time.perf_counter()
    for request in plain:
        given = request.header("x-darkmesh-key") or ""
        assert hmac.compare_digest(given.encode(), TEST_NODE_KEY.encode())
    baseline_rate = rate(n, time.perf_counter() - start)
    return {"signed_memory_cache": memory_rate, "signed_sqlite_cache": durable_rate,
            "unsigned_shared_key": baseline_rate}


async def bench_app(n: int, alg: str, workdir: Path) -> dict[str, float]:
    agent = new_agent(alg, sub="darkmesh-node@node_a", capabilities=("node.query",))  # type: ignore[arg-type]
    registry = write_trust_file(workdir / f"app-registry-{alg}.json", [agent])
    keys = workdir / f"keys-{alg}"
    keys.mkdir()
    key_file = keys / "node.private.jwk"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(new_agent(alg, sub="darkmesh-node@node_b").key.private_jwk, handle)  # type: ignore[arg-type]
    signed_host = make_host(
        builtins=TEST_BUILTINS | {"darkmesh-aauth"}, node_id="node_b", auth_mode="aauth",
        listen_url=f"http://{AUTHORITY}", data_dir=str(workdir / f"data-{alg}"),
        tables={"aauth": {"trusted_agents_file": str(registry),
                          "private_jwk_path": str(key_file), "key_dir": str(keys)}})
    plain_host = make_host(node_id="node_b", auth_mode="hmac", listen_url=f"http://{AUTHORITY}",
                           data_dir=str(workdir / f"plain-{alg}"))
    results: dict[str, float] = {}
    for label, host, headers in (
        ("signed_aauth", signed_host, [agent.sign("GET", URL) for _ in range(n)]),
        ("unsigned_hmac", plain_host, [{"X-Darkmesh-Key": TEST_NODE_KEY}] * n),
    ):
        app = create_node_app(host)
        await host.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=f"http://{AUTHORITY}") as client:
            start = time.perf_counter()
            for header_set in headers:
                response = await client.get("/darkmesh/capabilities", headers=header_set)
                assert response.status_code == 200, response.text
            results[label] = rate(n, time.perf_counter() - start)
        await host.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per measurement")
    args = parser.parse_args()
    report: dict[str, Any] = {"n": args.n}
    with tempfile.TemporaryDirectory(prefix="darkmesh-bench-") as scratch:
        workdir = Path(scratch)
        for alg in ("Ed25519", "ES256"):
            report[f"verifier_{alg}"] = await bench_verifier(args.n, alg, workdir)
            report[f"node_app_{alg}"] = await bench_app(max(args.n // 3, 100), alg, workdir)
    for section, values in report.items():
        if isinstance(values, dict):
            line = ", ".join(f"{k} {v:,.0f}/s" for k, v in values.items())
            print(f"{section}: {line}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
