"""Redis restarts: with the append-only file nothing acknowledged is lost and the epoch
stays; when the data is lost (FLUSHALL, no persistence) the epoch changes and seq
restarts, so listeners know to start over."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from darkmesh_redis.backend import RedisRelayBackend
from darkmesh_redis.testing import make_settings, started_backend

from sdl_core import NodeRecord

V1 = "warm_intro_v1"


def post(i: int) -> dict[str, Any]:
    return {"request_id": f"r{i}", "requester_id": "node_a", "template": V1,
            "target": {"company": "X"}, "psi": {}, "constraints": {}, "created_at": time.time()}


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["kill -9", "graceful restart"])
async def test_no_acknowledged_write_is_lost_across_a_redis_restart(own_redis: Any,
                                                                    how: str) -> None:
    settings = make_settings(own_redis.url)
    async with started_backend(settings) as backend:
        epoch = await backend.epoch()
        stored = [await backend.publish(post(i), time.time() + 300) for i in range(50)]
        record = NodeRecord(node_id="node_b", url="http://b", capabilities=(V1,),
                            last_seen=time.time())
        await backend.register_node(record, ["alias-b"])
        kept = await backend.mailbox_send("node_b", "node_a", True, "keep", "AA==", time.time())
        acked = await backend.mailbox_send("node_b", "node_a", True, "ack", "AQ==", time.time())
        assert await backend.mailbox_ack("node_b", [acked.id]) == 1
        assert await backend.remember_once("jti-1", 300)

        if how == "kill -9":
            own_redis.kill()  # appendfsync always: every acknowledged write is on disk
            own_redis.start()
        else:
            own_redis.restart()

        # The same relay process carries on (its connections reconnect) ...
        assert await backend.epoch() == epoch
        result = await backend.pull("node_c", [V1], 0, 100, 0, time.time())
        assert result.posts == stored and result.epoch == epoch
        assert (await backend.publish(post(50), time.time() + 300))["seq"] == 51
        # ... and a relay process started afterwards sees the same data.
        async with started_backend(settings) as fresh:
            assert await fresh.epoch() == epoch
            assert await fresh.list_nodes() == [record]
            assert await fresh.resolve_recipient("alias-b") == "node_b"
            assert await fresh.mailbox_pull("node_b", 50, 0) == [kept]
            assert await fresh.remember_once("jti-1", 300) is False


@pytest.mark.asyncio
async def test_flushall_gives_a_new_epoch_and_seq_restarts(own_redis: Any) -> None:
    async with started_backend(make_settings(own_redis.url)) as backend, \
            started_backend(backend.settings) as other:
        old_epoch = await backend.epoch()
        for i in range(5):
            await backend.publish(post(i), time.time() + 300)
        own_redis.flushall()
        # Whichever relay touches the data first creates the new epoch; both agree.
        result = await other.pull("node_c", [V1], 5, 100, 0, time.time())
        assert result.epoch != old_epoch and result.posts == [] and result.cursor == 5
        assert await backend.epoch() == result.epoch
        first = await backend.publish(post(9), time.time() + 300)
        assert first["seq"] == 1
        restart = await other.pull("node_c", [V1], 0, 100, 0, time.time())
        assert [p["request_id"] for p in restart.posts] == ["r9"]


@pytest.mark.asyncio
async def test_a_waiting_pull_reports_the_new_epoch_after_data_loss(own_redis: Any) -> None:
    async with started_backend(make_settings(own_redis.url)) as backend, \
            started_backend(backend.settings) as other:
        old_epoch = await backend.epoch()
        await backend.publish(post(0), time.time() + 300)
        waiting = asyncio.create_task(backend.pull("node_c", [V1], 1, 100, 20, time.time()))
        await asyncio.sleep(0.2)
        own_redis.flushall()
        await other.publish(post(1), time.time() + 300)  # seq 1 of the new data
        started = time.monotonic()
        result = await asyncio.wait_for(waiting, 15)
        # It answers at once, in the new epoch, rather than waiting out its 20 s.
        assert time.monotonic() - started < 5
        assert result.epoch != old_epoch and result.epoch == await other.epoch()
        # The listener then restarts from 0 and gets the new post.
        again = await backend.pull("node_c", [V1], 0, 100, 0, time.time())
        assert [p["request_id"] for p in again.posts] == ["r1"]


@pytest.mark.asyncio
async def test_redis_without_persistence_loses_data_and_says_so(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from darkmesh_redis.testing import RedisServer

    server = RedisServer(tmp_path / "volatile", appendonly=False).start()
    try:
        backend = RedisRelayBackend(make_settings(server.url))
        with caplog.at_level("WARNING", logger="darkmesh.redis"):
            await backend.start()
        assert "has no persistence" in caplog.text
        try:
            epoch = await backend.epoch()
            await backend.publish(post(0), time.time() + 300)
            server.restart()
            assert await backend.epoch() != epoch
            assert await backend.count_posts(time.time()) == 0
        finally:
            await backend.close()
    finally:
        server.kill()
