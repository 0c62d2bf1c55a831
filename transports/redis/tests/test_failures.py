"""Redis failures: a clear error at start-up; 503 with a reason, in bounded time, while it
is down (killed or frozen); normal service once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from darkmesh_redis.backend import RedisRelayBackend
from darkmesh_redis.testing import RELAY_KEY, make_relay_host, make_settings, started_backend

from sdl_core import RelayUnavailable, StartupError
from sdl_core.relay import create_relay_app
from sdl_core.testing.relay_process import RelayProcess, free_port

#: The settings in make_settings: 2 attempts x 1 s timeouts + 0.05 s backoff, with room.
FAILURE_BOUND_SECONDS = 6.0


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.asyncio
async def test_unreachable_redis_at_start_up_names_the_setting() -> None:
    backend = RedisRelayBackend(make_settings(dead_url()))
    started = time.monotonic()
    with pytest.raises(StartupError) as info:
        await backend.start()
    assert time.monotonic() - started < FAILURE_BOUND_SECONDS
    message = str(info.value)
    assert message.startswith("darkmesh-redis: cannot reach Redis at redis://127.0.0.1:")
    assert "DARKMESH_REDIS_URL" in message and "start redis-server" in message
    await backend.close()


@pytest.mark.asyncio
async def test_start_up_message_hides_the_password() -> None:
    port = free_port()
    backend = RedisRelayBackend(make_settings(f"redis://:s3cret@127.0.0.1:{port}/0"))
    with pytest.raises(StartupError) as info:
        await backend.start()
    assert "s3cret" not in str(info.value) and ":***@" in str(info.value)


def test_a_relay_process_without_redis_exits_with_the_message(tmp_path: Path) -> None:
    relay = RelayProcess(backend="redis", data_dir=tmp_path, plugins=("darkmesh-redis",),
                         env={"DARKMESH_REDIS_URL": dead_url(),
                              "DARKMESH_REDIS_RETRY_ATTEMPTS": "1"},
                         startup_timeout=30)
    with pytest.raises(RuntimeError) as info:
        relay.start()
    assert "relay process exited" in str(info.value)
    assert "cannot reach Redis" in str(info.value)
    assert "DARKMESH_REDIS_URL" in str(info.value)


# --------------------------------------------------------------- outage mid-run


@pytest_asyncio.fixture
async def relay_client(own_redis: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An in-process relay app on the redis backend, with the test's own Redis."""
    relay = make_relay_host(make_settings(own_redis.url))
    app = create_relay_app(relay)
    await relay.start()  # ASGITransport sends no lifespan events
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay",
                                     headers={"X-Darkmesh-Key": RELAY_KEY}) as client:
            yield client, relay
    finally:
        await relay.stop()


def post_body(request_id: str = "r1", requester: str = "node_a") -> dict[str, Any]:
    return {"relay_key": RELAY_KEY, "request_id": request_id, "requester_id": requester,
            "template": "warm_intro_v2", "ttl_seconds": 300}


def pull_body(cursor: int = 0, wait: float = 0) -> dict[str, Any]:
    return {"relay_key": RELAY_KEY, "node_id": "node_b", "capabilities": ["warm_intro_v2"],
            "cursor": cursor, "wait": wait}


def assert_backend_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["reason"] == "backend_unavailable"
    assert body["detail"].startswith("relay backend unavailable: redis")


@pytest.mark.asyncio
async def test_killed_redis_gives_503_with_a_reason_then_recovers(
    relay_client: tuple[httpx.AsyncClient, Any], own_redis: Any,
) -> None:
    client, _ = relay_client
    assert (await client.post("/darkmesh/relay/posts", json=post_body("before"))).status_code == 200
    epoch = (await client.get("/darkmesh/relay/health")).json()["epoch"]
    # A long-poll already waiting when Redis dies must answer too, not hang.
    waiting = asyncio.create_task(client.post("/darkmesh/relay/posts/pull",
                                              json=pull_body(cursor=1, wait=25)))
    await asyncio.sleep(0.3)
    own_redis.kill()
    killed_at = time.monotonic()

    parked = await asyncio.wait_for(waiting, FAILURE_BOUND_SECONDS + 2)
    assert_backend_unavailable(parked)
    assert time.monotonic() - killed_at < FAILURE_BOUND_SECONDS + 2

    for method, path, body in [
        ("POST", "/darkmesh/relay/posts", post_body("during")),
        ("POST", "/darkmesh/relay/posts/pull", pull_body(wait=5)),
        ("GET", "/darkmesh/relay/health", None),
        ("POST", "/darkmesh/relay/mailbox/pull", {"relay_key": RELAY_KEY, "node_id": "node_b"}),
    ]:
        started = time.monotonic()
        response = await client.request(method, path, json=body)
        assert time.monotonic() - started < FAILURE_BOUND_SECONDS, path
        assert_backend_unavailable(response)

    own_redis.start()  # same port and directory: the append-only file comes back
    after = await client.post("/darkmesh/relay/posts", json=post_body("after"))
    assert after.status_code == 200 and after.json()["seq"] == 2
    health = (await client.get("/darkmesh/relay/health")).json()
    assert health["epoch"] == epoch and health["posts"] == 2
    # The watcher reconnected: a long-poll wakes on a publish again.
    waiting = asyncio.create_task(client.post("/darkmesh/relay/posts/pull",
                                              json=pull_body(cursor=2, wait=10)))
    await asyncio.sleep(0.3)
    await client.post("/darkmesh/relay/posts", json=post_body("woken"))
    woke = await asyncio.wait_for(waiting, 5)
    assert [p["request_id"] for p in woke.json()["posts"]] == ["woken"]


@pytest.mark.asyncio
async def test_frozen_redis_times_out_with_503_instead_of_hanging(
    relay_client: tuple[httpx.AsyncClient, Any], own_redis: Any,
) -> None:
    client, _ = relay_client
    assert (await client.post("/darkmesh/relay/posts", json=post_body())).status_code == 200
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # accepts nothing, answers nothing: the worst case
    try:
        started = time.monotonic()
        response = await client.post("/darkmesh/relay/posts", json=post_body("frozen"))
        assert time.monotonic() - started < FAILURE_BOUND_SECONDS
        assert_backend_unavailable(response)
        assert "Timeout" in response.json()["detail"] or "timed out" in response.json()["detail"]
    finally:
        os.kill(pid, signal.SIGCONT)
    recovered = await client.post("/darkmesh/relay/posts/pull", json=pull_body())
    assert recovered.status_code == 200
    seen = [p["request_id"] for p in recovered.json()["posts"]]
    # The frozen server may still run the timed-out publish when it thaws, and the
    # retry sent it twice: it lands at most once (the publish is deduplicated).
    assert seen in (["r1"], ["r1", "frozen"])


@pytest.mark.asyncio
async def test_backend_errors_are_relay_unavailable(own_redis: Any) -> None:
    async with started_backend(make_settings(own_redis.url)) as backend:
        own_redis.kill()
        for call in (backend.epoch(), backend.remember_once("k", 5),
                     backend.mailbox_ack("n", ["1-0"]), backend.list_nodes()):
            with pytest.raises(RelayUnavailable, match="unreachable"):
                await call
        assert backend.status()["url"] == own_redis.url
