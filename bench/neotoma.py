"""Live-store lookup latency, warm vs cold cache, for 2,000 contacts in Neotoma.

Runs the Neotoma stand-in (``stores/neotoma/tests/standin``) on 127.0.0.1 over real
HTTP, seeds it with N contacts, and times what a skill does on every request: load every
contact and interaction through ``host.store`` (``darkmesh_warm_intro.matching
.load_contacts`` does exactly this). *Cold* drops the cache first, so each lookup pages
through Neotoma (500 per page) and maps the entities; *warm* is served from the TTL cache.

    /work/venv/bin/python bench/neotoma.py [--contacts 2000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stores" / "neotoma" / "tests"))

from standin import StandinServer  # noqa: E402

from sdl_core.testing.host import TEST_BUILTINS, make_host  # noqa: E402


def seed(server: StandinServer, count: int) -> None:
    for start in range(0, count, 500):
        entities = [{"entity_type": "contact", "name": f"Person {i:05d}",
                     "email": f"person{i:05d}@example.com", "organization": f"Org {i % 97}",
                     "title": "Engineer"} for i in range(start, min(start + 500, count))]
        answer = httpx.post(server.url + "/store", timeout=60, json={
            "idempotency_key": f"bench-{start}", "entities": entities})
        answer.raise_for_status()


async def lookup(store: Any) -> int:
    """What a skill does per request: read every interaction, then every contact."""
    interactions = [r async for r in store.iterate("interactions")]
    contacts = [r async for r in store.iterate("contacts")]
    assert len(interactions) == len(contacts)  # every seeded contact has an email
    return len(contacts)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(p95 * 1000, 3), "min_ms": round(ordered[0] * 1000, 3)}


async def run(contacts: int, rounds: int) -> dict[str, Any]:
    with StandinServer(profile="dev") as server, tempfile.TemporaryDirectory() as data:
        seed(server, contacts)
        host = make_host(builtins=set(TEST_BUILTINS) | {"darkmesh-neotoma"}, node_id="bench",
                         store="neotoma", data_dir=data,
                         tables={"neotoma": {"url": server.url, "fallback_store": "memory",
                                             "cache_ttl_seconds": 3600}})
        host.prepare()
        await host.start()
        store = host.store
        try:
            assert await lookup(store) == contacts
            cold: list[float] = []
            warm: list[float] = []
            for _ in range(rounds):
                store.invalidate()  # type: ignore[attr-defined]
                began = time.perf_counter()
                assert await lookup(store) == contacts
                cold.append(time.perf_counter() - began)
                for _ in range(5):
                    began = time.perf_counter()
                    assert await lookup(store) == contacts
                    warm.append(time.perf_counter() - began)
        finally:
            await host.stop()
    return {"contacts": contacts, "rounds": rounds, "page_size": 500,
            "cold": summary(cold), "warm": summary(warm),
            "speedup_median": round(statistics.median(cold) / statistics.median(warm), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.contacts, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
