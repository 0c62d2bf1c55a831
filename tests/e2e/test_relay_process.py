"""A real relay process (Hypercorn on 127.0.0.1): long-poll wake-up, durability, SIGTERM.

Every parked pull must return because of the publish, never because its wait ran out; the
issue's 100 ms figure is held by the median of the measured rounds (one slow round on a
busy machine is not a wake-up failure). ``bench/relay.py`` reports the full distribution.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdl_core.testing.relay_process import RelayProcess

pytestmark = pytest.mark.e2e

#: How long each parked pull may wait; returning far sooner means the publish woke it.
PULL_WAIT_SECONDS = 20
WOKEN_WELL_BEFORE_THE_WAIT = PULL_WAIT_SECONDS / 4
#: The issue's figure: a parked long-poll returns within 100 ms of a publish.
WAKE_BOUND_SECONDS = 0.1
MEASURED_ROUNDS = 7


def v1_post(key: str, request_id: str) -> dict[str, Any]:
    return {"relay_key": key, "request_id": request_id, "requester_id": "node_a",
            "requester_url": "http://localhost:8001", "template": "warm_intro_v1",
            "response_token": "t" * 32}


async def one_round(relay: RelayProcess, puller: httpx.AsyncClient,
                    publisher: httpx.AsyncClient, cursor: int, index: int) -> tuple[float, int]:
    """Park a long-poll, publish from the other client, return (latency, new cursor)."""
    pull = asyncio.create_task(puller.post(
        "/darkmesh/relay/posts/pull",
        json={"relay_key": relay.key, "node_id": "node_b", "cursor": cursor,
              "wait": PULL_WAIT_SECONDS},
    ))
    await asyncio.sleep(0.3)  # the pull is now held open by the relay
    assert not pull.done()
    published_at = time.perf_counter()
    answer = await publisher.post("/darkmesh/relay/posts", json=v1_post(relay.key, f"r{index}"))
    assert answer.status_code == 200, answer.text
    reply = await pull
    returned_at = time.perf_counter()
    assert reply.status_code == 200
    data = reply.json()
    assert [p["request_id"] for p in data["posts"]] == [f"r{index}"]
    return returned_at - published_at, int(data["cursor"])


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_long_poll_returns_within_100ms_of_a_publish(tmp_path: Path, backend: str) -> None:
    async def scenario(relay: RelayProcess) -> list[float]:
        async with httpx.AsyncClient(base_url=relay.url, timeout=60) as puller, \
                httpx.AsyncClient(base_url=relay.url, timeout=30) as publisher:
            # Round 0 opens both connections and warms the relay's first-call paths.
            _, cursor = await one_round(relay, puller, publisher, 0, 0)
            latencies = []
            for index in range(1, MEASURED_ROUNDS + 1):
                latency, cursor = await one_round(relay, puller, publisher, cursor, index)
                latencies.append(latency)
            return latencies

    with RelayProcess(backend=backend, data_dir=tmp_path) as relay:
        latencies = asyncio.run(scenario(relay))
    # Each pull returned with exactly the new post, long before its own wait ran out ...
    assert max(latencies) < WOKEN_WELL_BEFORE_THE_WAIT, latencies
    # ... and typically within the bound (publish round trip included).
    assert statistics.median(latencies) < WAKE_BOUND_SECONDS, latencies


def test_sqlite_relay_keeps_posts_seq_and_epoch_across_a_restart(tmp_path: Path) -> None:
    relay = RelayProcess(backend="sqlite", data_dir=tmp_path)
    with relay:
        first = httpx.get(f"{relay.url}/darkmesh/relay/health").json()
        for i in range(3):
            httpx.post(f"{relay.url}/darkmesh/relay/posts", json=v1_post(relay.key, f"r{i}"))
        exit_code = relay.stop()
    assert exit_code == 0  # SIGTERM is a graceful shutdown
    with relay:
        health = httpx.get(f"{relay.url}/darkmesh/relay/health").json()
        assert health["epoch"] == first["epoch"] and health["posts"] == 3
        seq = httpx.post(f"{relay.url}/darkmesh/relay/posts",
                         json=v1_post(relay.key, "after")).json()["seq"]
        assert seq == 4


def test_memory_relay_restart_changes_the_epoch(tmp_path: Path) -> None:
    relay = RelayProcess(backend="memory", data_dir=tmp_path)
    with relay:
        before = httpx.get(f"{relay.url}/darkmesh/relay/health").json()["epoch"]
    with relay:
        after = httpx.get(f"{relay.url}/darkmesh/relay/health").json()["epoch"]
    assert before != after


def test_sigterm_during_a_long_poll_exits_cleanly(tmp_path: Path) -> None:
    relay = RelayProcess(backend="sqlite", data_dir=tmp_path).start()

    async def park_then_stop() -> int | None:
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as client:
            pull = asyncio.create_task(client.post(
                "/darkmesh/relay/posts/pull",
                json={"relay_key": relay.key, "node_id": "node_b", "wait": 30},
            ))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            code = await asyncio.to_thread(relay.stop)
            assert time.monotonic() - started < 9  # graceful timeout, not the 30 s wait
            pull.cancel()
            return code

    assert asyncio.run(park_then_stop()) == 0
