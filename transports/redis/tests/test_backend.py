"""What only the Redis backend promises: bounded memory, shared state between relay
processes, hostile input at the Redis boundary. The contract suite covers the rest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis_asyncio
from darkmesh_redis.backend import RedisRelayBackend
from darkmesh_redis.testing import started_backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdl_core import HTTPProblem, NodeRecord
from sdl_core.testing.relay_contract import reference_selection

V1 = "warm_intro_v1"


def post(requester: str = "node_a", template: str = V1, **extra: Any) -> dict[str, Any]:
    return {"request_id": "r", "requester_id": requester, "template": template,
            "target": {}, "psi": {}, "constraints": {}, "created_at": time.time(), **extra}


@pytest_asyncio.fixture
async def raw(shared_redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(shared_redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def twin(redis_backend: RedisRelayBackend) -> AsyncIterator[RedisRelayBackend]:
    """A second backend on the same data: another relay process, as far as Redis sees."""
    async with started_backend(redis_backend.settings) as other:
        yield other


async def prefixed_keys(raw: redis_asyncio.Redis, backend: RedisRelayBackend) -> set[str]:
    return {k async for k in raw.scan_iter(match=f"{backend.keys.prefix}*")}


# ------------------------------------------------------------- shared between relays


@pytest.mark.asyncio
async def test_two_relays_share_epoch_seq_and_posts(
    redis_backend: RedisRelayBackend, twin: RedisRelayBackend
) -> None:
    assert await redis_backend.epoch() == await twin.epoch()
    stored = await asyncio.gather(*(
        (redis_backend if i % 2 else twin).publish(post(request_id=f"r{i}"), time.time() + 60)
        for i in range(30)
    ))
    assert sorted(p["seq"] for p in stored) == list(range(1, 31))
    result = await twin.pull("node_b", [V1], 0, 100, 0, time.time())
    # Stream order is seq order even when the publishes raced: nothing can be skipped.
    assert [p["seq"] for p in result.posts] == list(range(1, 31))
    assert result.epoch == await redis_backend.epoch()


@pytest.mark.asyncio
async def test_long_poll_in_one_relay_wakes_on_a_publish_in_the_other(
    redis_backend: RedisRelayBackend, twin: RedisRelayBackend
) -> None:
    published_at: list[float] = []

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        published_at.append(time.monotonic())
        await redis_backend.publish(post(), time.time() + 60)

    task = asyncio.create_task(publish_later())
    result = await twin.pull("node_b", [V1], 0, 20, 20, time.time())
    woke_after = time.monotonic() - published_at[0]
    await task
    assert [p["seq"] for p in result.posts] == [1]
    assert woke_after < 5  # woken by the publish, not by its 20 s wait running out


@pytest.mark.asyncio
async def test_mailbox_wakes_and_acks_across_relays(
    redis_backend: RedisRelayBackend, twin: RedisRelayBackend
) -> None:
    waiting = asyncio.create_task(twin.mailbox_pull("node_b", 50, 10))
    await asyncio.sleep(0.2)
    sent = await redis_backend.mailbox_send("node_b", "node_a", True, "r1", "AA==", time.time())
    got = await asyncio.wait_for(waiting, 2)
    assert got == [sent]
    assert await twin.mailbox_ack("node_b", [sent.id]) == 1
    assert await redis_backend.mailbox_pull("node_b", 50, 0) == []


@pytest.mark.asyncio
async def test_registry_and_replay_cache_are_shared(
    redis_backend: RedisRelayBackend, twin: RedisRelayBackend
) -> None:
    record = NodeRecord(node_id="node_a", url="http://a", capabilities=(V1,),
                        last_seen=time.time())
    await redis_backend.register_node(record, ["alias-a"])
    assert await twin.list_nodes() == [record]
    assert await twin.resolve_recipient("alias-a") == "node_a"
    assert await twin.live_nodes(V1, time.time() - 60, "node_x") == 1
    assert await redis_backend.remember_once("jti-x", 60) is True
    assert await twin.remember_once("jti-x", 60) is False


# ------------------------------------------------------------------ bounded memory


@pytest.mark.asyncio
async def test_expired_posts_leave_nothing_behind(
    redis_backend: RedisRelayBackend, raw: redis_asyncio.Redis
) -> None:
    k = redis_backend.keys
    now = time.time()
    for _ in range(20):
        await redis_backend.publish(post(), now + 5)
    await redis_backend.publish(post(), now + 100)
    assert await redis_backend.purge_expired(now + 10) == 20
    assert await raw.xlen(k.posts) == 1
    assert await raw.hlen(k.post_bodies) == 1
    assert await raw.zcard(k.post_expiry) == 1


@pytest.mark.asyncio
async def test_the_janitor_purges_without_any_request(
    settings_factory: Any, raw: redis_asyncio.Redis
) -> None:
    async with started_backend(settings_factory(purge_interval_seconds=0.1)) as backend:
        await backend.publish(post(), time.time() + 0.2)
        deadline = time.monotonic() + 5
        while await raw.xlen(backend.keys.posts) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await raw.xlen(backend.keys.posts) == 0
        assert await raw.hlen(backend.keys.post_bodies) == 0


@pytest.mark.asyncio
async def test_posts_stream_is_capped_oldest_first(
    settings_factory: Any, raw: redis_asyncio.Redis
) -> None:
    async with started_backend(settings_factory(posts_max_len=10)) as backend:
        for i in range(25):
            await backend.publish(post(request_id=f"r{i}"), time.time() + 60)
        k = backend.keys
        assert await raw.xlen(k.posts) == 10
        assert await raw.hlen(k.post_bodies) == 10
        assert await backend.count_posts(time.time()) == 10
        result = await backend.pull("node_b", [V1], 0, 100, 0, time.time())
        assert [p["seq"] for p in result.posts] == list(range(16, 26))
        assert (await backend.publish(post(), time.time() + 60))["seq"] == 26


@pytest.mark.asyncio
async def test_acked_mail_is_deleted_and_empty_mailboxes_vanish(
    redis_backend: RedisRelayBackend, raw: redis_asyncio.Redis
) -> None:
    k = redis_backend.keys
    sent = [await redis_backend.mailbox_send("node_b", "node_a", True, f"r{i}", "AA==",
                                             time.time()) for i in range(5)]
    assert await raw.xlen(k.mailbox("node_b")) == 5
    await redis_backend.mailbox_ack("node_b", [m.id for m in sent[:3]])
    assert await raw.xlen(k.mailbox("node_b")) == 2
    await redis_backend.mailbox_ack("node_b", [m.id for m in sent[3:]])
    assert not await raw.exists(k.mailbox("node_b"))
    assert await raw.zscore(k.mailbox_index, "node_b") is None


@pytest.mark.asyncio
async def test_unacked_mail_past_retention_is_dropped(
    redis_backend: RedisRelayBackend, raw: redis_asyncio.Redis
) -> None:
    now = time.time()
    retention = redis_backend.settings.mailbox_retention_seconds
    old = await redis_backend.mailbox_send("node_b", "node_a", True, "old", "AA==", now)
    fresh = await redis_backend.mailbox_send("node_b", "node_a", True, "new", "AQ==",
                                             now + retention / 2)
    await redis_backend.mailbox_send("node_c", "node_a", True, "old", "AA==", now)
    await redis_backend.purge_expired(now + retention + 1)
    assert [m.id for m in await redis_backend.mailbox_pull("node_b", 50, 0)] == [fresh.id]
    assert old.id != fresh.id
    assert not await raw.exists(redis_backend.keys.mailbox("node_c"))


@pytest.mark.asyncio
async def test_a_full_mailbox_refuses_with_429(settings_factory: Any) -> None:
    async with started_backend(settings_factory(mailbox_max_len=10)) as backend:
        for i in range(10):
            await backend.mailbox_send("node_b", "node_a", False, f"r{i}", "AA==", time.time())
        with pytest.raises(HTTPProblem) as info:
            await backend.mailbox_send("node_b", "node_a", False, "r-over", "AA==", time.time())
        assert info.value.status == 429 and info.value.reason == "mailbox_full"
        assert "node_b" not in str(info.value.detail)  # never disclose who the alias is
        first = (await backend.mailbox_pull("node_b", 1, 0))[0]
        await backend.mailbox_ack("node_b", [first.id])
        await backend.mailbox_send("node_b", "node_a", False, "r-after", "AA==", time.time())


@pytest.mark.asyncio
async def test_presence_is_trimmed_and_replaced(
    redis_backend: RedisRelayBackend, raw: redis_asyncio.Redis
) -> None:
    k = redis_backend.keys
    now = time.time()
    await redis_backend.touch_node("node_a", ["t1", "t2"], now)
    await redis_backend.touch_node("node_a", ["t2"], now)
    assert await redis_backend.live_nodes("t1", now - 60, "x") == 0
    assert await redis_backend.live_nodes("t2", now - 60, "x") == 1
    await redis_backend._trim_presence(now + redis_backend.settings.presence_retention_seconds + 1)
    assert not await raw.exists(k.live("t2"))
    assert await raw.scard(k.live_templates) == 0


@pytest.mark.asyncio
async def test_a_mail_clock_going_back_keeps_send_order(redis_backend: RedisRelayBackend) -> None:
    # Two relays whose clocks differ: ids still rise in send order.
    now = time.time()
    first = await redis_backend.mailbox_send("node_b", "a", True, "r1", "AA==", now)
    second = await redis_backend.mailbox_send("node_b", "a", True, "r2", "AA==", now - 5)
    got = await redis_backend.mailbox_pull("node_b", 50, 0)
    assert [m.id for m in got] == [first.id, second.id]


# ------------------------------------------------------------------ hostile input


@pytest.mark.asyncio
@pytest.mark.parametrize("ids", [["not-an-id"], ["1-2-3"], ["99999999999999999999999-0"],
                                 ["*"], ["-"], [""], ["0-0"]])
async def test_ack_with_foreign_ids_removes_nothing(
    redis_backend: RedisRelayBackend, ids: list[str]
) -> None:
    sent = await redis_backend.mailbox_send("node_b", "a", True, "r", "AA==", time.time())
    assert await redis_backend.mailbox_ack("node_b", ids) == 0
    assert [m.id for m in await redis_backend.mailbox_pull("node_b", 50, 0)] == [sent.id]


@pytest.mark.asyncio
@pytest.mark.parametrize("cursor", [-5, 2**53, 2**64 + 10])
async def test_extreme_cursors_are_answered(redis_backend: RedisRelayBackend, cursor: int) -> None:
    await redis_backend.publish(post(), time.time() + 60)
    result = await redis_backend.pull("node_b", [V1], cursor, 20, 0, time.time())
    if cursor < 0:
        assert [p["seq"] for p in result.posts] == [1] and result.cursor == 1
    else:
        assert result.posts == [] and result.cursor == cursor


@pytest.mark.asyncio
async def test_names_with_key_syntax_stay_apart(redis_backend: RedisRelayBackend) -> None:
    # Node ids and templates end up inside key names; ":" or "*" must not alias keys.
    await redis_backend.mailbox_send("a:b", "x", True, "r", "AA==", time.time())
    assert await redis_backend.mailbox_pull("a", 50, 0) == []
    assert len(await redis_backend.mailbox_pull("a:b", 50, 0)) == 1
    await redis_backend.touch_node("n1", ["t*", "t:1"], time.time())
    assert await redis_backend.live_nodes("t", time.time() - 60, "x") == 0
    assert await redis_backend.live_nodes("t*", time.time() - 60, "x") == 1


# ------------------------------------------------------------- selection property

_posts = st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3"]),
                            st.sampled_from(["t1", "t2", "t3"]),
                            st.booleans()),  # expired at pull time?
                  max_size=30)
_pulls = st.lists(st.tuples(st.sampled_from(["n1", "n2", "n4"]),
                            st.sets(st.sampled_from(["t1", "t2", "t3"]), min_size=1),
                            st.integers(min_value=0, max_value=32),
                            st.integers(min_value=1, max_value=6)),
                  min_size=1, max_size=5)


@pytest.mark.asyncio
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.differing_executors])
@given(posts=_posts, pulls=_pulls, budget=st.integers(min_value=1, max_value=5))
async def test_paged_selection_with_expiry_is_the_v1_rule(
    redis_backend: RedisRelayBackend, twin: RedisRelayBackend,
    posts: list[tuple[str, str, bool]], pulls: list[tuple[str, set[str], int, int]],
    budget: int,
) -> None:
    """Publishes through two relays, pulls with a tiny scan budget (many script pages),
    expired posts treated as purged: the answer is the v1 rule over the live posts."""
    tag = uuid.uuid4().hex[:8]
    now = time.time()
    base = (await redis_backend.publish(post(f"{tag}-marker", f"{tag}-marker"), now + 600))["seq"]
    live: list[tuple[int, str, str]] = []
    for index, (requester, template, expired) in enumerate(posts):
        via = twin if index % 2 else redis_backend
        stored = await via.publish(post(f"{tag}-{requester}", f"{tag}-{template}"),
                                   now + (5 if expired else 600))
        if not expired:
            live.append((stored["seq"], stored["requester_id"], stored["template"]))
    twin.scan_budget = budget
    later = now + 10  # the short-lived posts have expired by then
    for node, caps, offset, limit in pulls:
        node_id = f"{tag}-{node}"
        templates = {f"{tag}-{t}" for t in caps}
        expected_cursor, expected = reference_selection(live, node_id, templates,
                                                        base + offset, limit)
        result = await twin.pull(node_id, sorted(templates), base + offset, limit, 0, later)
        assert [p["seq"] for p in result.posts] == expected
        assert result.cursor == expected_cursor
