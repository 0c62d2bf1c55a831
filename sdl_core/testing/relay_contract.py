"""``RelayBackendContract``: the behaviour every :class:`sdl_core.RelayBackend` keeps.

Subclass it in a test module and supply one async fixture, ``backend``, that yields a
started backend on fresh, empty data (and closes it afterwards)::

    import pytest_asyncio
    from sdl_core.testing.relay_contract import RelayBackendContract

    class TestMyBackend(RelayBackendContract):
        @pytest_asyncio.fixture
        async def backend(self):
            b = MyBackend(...)
            await b.start()
            yield b
            await b.close()

A durable backend also subclasses :class:`DurableRelayBackendContract` and adds a
``reopen`` fixture: an async callable that closes the current backend and returns a new
started one on the *same* data (the fixture closes the last one at teardown).

The suite is backend-agnostic: it never looks at storage, only at the Protocol. It
needs no exclusive data set beyond a fresh ``backend`` per test; the property test
shares one backend across its examples and isolates them by unique names and cursors.
Timing checks use generous margins except the one the issue fixes: a long-poll wakes
within 100 ms of a publish.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdl_core.protocols import JSONObject, NodeRecord, PullResult, RelayBackend

__all__ = ["DurableRelayBackendContract", "RelayBackendContract", "reference_selection"]

#: The wake-up bound the issue sets for a long-poll after a publish.
WAKE_BOUND_SECONDS = 0.1
V1 = "warm_intro_v1"


def make_post(requester_id: str = "node_a", template: str = V1, **extra: Any) -> JSONObject:
    """A post as the relay app hands it to ``publish`` (validated, without seq/post_id)."""
    post: JSONObject = {
        "request_id": extra.pop("request_id", uuid.uuid4().hex[:8]),
        "requester_id": requester_id,
        "requester_url": "http://localhost:8001",
        "template": template,
        "target": {"company": "Company X", "role": "Business Development"},
        "psi": {"protocol": "dh-psi-v1", "x_values": ["1c3e", "7a90"]},
        "constraints": {"max_candidates": 3, "min_strength": 0.5},
        "response_token": uuid.uuid4().hex,
        "created_at": time.time(),
    }
    post.update(extra)
    return post


def reference_selection(
    posts: list[tuple[int, str, str]], node_id: str, capabilities: set[str], cursor: int,
    limit: int,
) -> tuple[int, list[int]]:
    """``wire-v1.md`` §4.5 verbatim over ``(seq, requester_id, template)`` in seq order.

    :returns: the out cursor and the selected seqs.
    """
    out_cursor = cursor
    selected: list[int] = []
    for seq, requester, template in posts:
        if seq <= cursor:
            continue
        out_cursor = max(out_cursor, seq)
        if requester == node_id:
            continue
        if template not in capabilities:
            continue
        selected.append(seq)
        if len(selected) >= limit:
            break
    return out_cursor, selected


async def _publish(backend: RelayBackend, ttl: float = 60.0, **kwargs: Any) -> JSONObject:
    return await backend.publish(make_post(**kwargs), time.time() + ttl)


async def _pull(backend: RelayBackend, node_id: str = "node_b", *, caps: tuple[str, ...] = (V1,),
                cursor: int = 0, limit: int = 20, wait: float = 0.0,
                now: float | None = None) -> PullResult:
    return await backend.pull(node_id, caps, cursor, limit, wait,
                              time.time() if now is None else now)


def _node(node_id: str, caps: tuple[str, ...] = (V1,), seen: float | None = None) -> NodeRecord:
    return NodeRecord(node_id=node_id, url=f"http://{node_id}.example", capabilities=caps,
                      last_seen=time.time() if seen is None else seen)


# ------------------------------------------------------------------ strategies

_publish_ops = st.lists(
    st.tuples(st.sampled_from(["n1", "n2", "n3"]), st.sampled_from(["t1", "t2", "t3"])),
    min_size=0, max_size=25,
)
_pull_ops = st.lists(
    st.tuples(
        st.sampled_from(["n1", "n2", "n4"]),
        st.sets(st.sampled_from(["t1", "t2", "t3"]), min_size=1),
        st.integers(min_value=0, max_value=28),
        st.integers(min_value=1, max_value=8),
    ),
    min_size=1, max_size=6,
)


class RelayBackendContract:
    """Behaviour every relay backend keeps.

    Subclasses supply the ``backend`` fixture (a started backend on empty data); the
    suite defines none, so a subclass that forgets it fails with "fixture 'backend' not
    found" on every test.
    """

    # ---------------------------------------------------------------- identity

    @pytest.mark.asyncio
    async def test_implements_protocol(self, backend: RelayBackend) -> None:
        assert isinstance(backend, RelayBackend)

    @pytest.mark.asyncio
    async def test_epoch_is_a_stable_nonempty_string(self, backend: RelayBackend) -> None:
        first = await backend.epoch()
        assert isinstance(first, str) and first
        await _publish(backend)
        await backend.purge_expired(time.time())
        assert await backend.epoch() == first
        assert (await _pull(backend)).epoch == first

    # ------------------------------------------------------------------- posts

    @pytest.mark.asyncio
    async def test_publish_assigns_seq_from_1_and_post_id(self, backend: RelayBackend) -> None:
        post = make_post()
        expires_at = time.time() + 30
        stored = await backend.publish(post, expires_at)
        assert stored["seq"] == 1
        assert re.fullmatch(r"[0-9a-f]{12}", stored["post_id"])
        assert stored == {"seq": 1, "post_id": stored["post_id"], **post, "expires_at": expires_at}
        second = await _publish(backend)
        assert second["seq"] == 2
        assert second["post_id"] != stored["post_id"]

    @pytest.mark.asyncio
    async def test_pull_returns_stored_posts_in_seq_order(self, backend: RelayBackend) -> None:
        stored = [await _publish(backend, request_id=f"r{i}") for i in range(3)]
        result = await _pull(backend)
        assert result.posts == stored
        assert result.cursor == 3
        assert result.epoch == await backend.epoch()

    @pytest.mark.asyncio
    async def test_pulled_posts_are_copies(self, backend: RelayBackend) -> None:
        await _publish(backend)
        first = await _pull(backend)
        first.posts[0]["target"]["company"] = "mutated"
        again = await _pull(backend)
        assert again.posts[0]["target"]["company"] == "Company X"

    @pytest.mark.asyncio
    async def test_own_posts_are_skipped_but_counted(self, backend: RelayBackend) -> None:
        await _publish(backend, requester_id="node_b")
        await _publish(backend, requester_id="node_b")
        result = await _pull(backend, "node_b")
        assert result.posts == []
        assert result.cursor == 2
        other = await _pull(backend, "node_c")
        assert [p["seq"] for p in other.posts] == [1, 2]

    @pytest.mark.asyncio
    async def test_templates_filter_and_skipped_posts_count(self, backend: RelayBackend) -> None:
        await _publish(backend, template="warm_intro_v2")
        await _publish(backend, template=V1)
        await _publish(backend, template="writer_tier_v1")
        v1_only = await _pull(backend, caps=(V1,))
        assert [p["seq"] for p in v1_only.posts] == [2]
        assert v1_only.cursor == 3
        both = await _pull(backend, caps=("warm_intro_v2", "writer_tier_v1"))
        assert [p["seq"] for p in both.posts] == [1, 3]

    @pytest.mark.asyncio
    async def test_limit_stops_examining_at_the_last_post_taken(
        self, backend: RelayBackend
    ) -> None:
        for _ in range(5):
            await _publish(backend)
        result = await _pull(backend, limit=2)
        assert [p["seq"] for p in result.posts] == [1, 2]
        assert result.cursor == 2
        rest = await _pull(backend, cursor=result.cursor, limit=10)
        assert [p["seq"] for p in rest.posts] == [3, 4, 5]
        assert rest.cursor == 5

    @pytest.mark.asyncio
    async def test_cursor_never_goes_back(self, backend: RelayBackend) -> None:
        await _publish(backend)
        result = await _pull(backend, cursor=40)
        assert result.posts == []
        assert result.cursor == 40

    @pytest.mark.asyncio
    async def test_expired_posts_are_never_returned(self, backend: RelayBackend) -> None:
        now = time.time()
        await backend.publish(make_post(), now + 5)
        await backend.publish(make_post(), now + 100)
        later = now + 10
        result = await _pull(backend, now=later)
        assert [p["seq"] for p in result.posts] == [2]
        assert await backend.count_posts(later) == 1
        assert await backend.count_posts(now) == 2

    @pytest.mark.asyncio
    async def test_purge_removes_expired_posts(self, backend: RelayBackend) -> None:
        now = time.time()
        await backend.publish(make_post(), now + 5)
        await backend.publish(make_post(), now + 5)
        await backend.publish(make_post(), now + 100)
        assert await backend.purge_expired(now + 10) == 2
        assert await backend.count_posts(now) == 1
        assert await backend.purge_expired(now + 10) == 0

    @pytest.mark.asyncio
    async def test_seq_keeps_rising_after_every_post_expired(self, backend: RelayBackend) -> None:
        now = time.time()
        await backend.publish(make_post(), now + 5)
        await backend.publish(make_post(), now + 5)
        await backend.purge_expired(now + 10)
        assert (await _publish(backend))["seq"] == 3

    @pytest.mark.asyncio
    async def test_concurrent_publishes_get_distinct_consecutive_seqs(
        self, backend: RelayBackend
    ) -> None:
        stored = await asyncio.gather(*(_publish(backend) for _ in range(40)))
        assert sorted(p["seq"] for p in stored) == list(range(1, 41))
        assert len({p["post_id"] for p in stored}) == 40

    # --------------------------------------------------------------- long-poll

    @pytest.mark.asyncio
    async def test_long_poll_wakes_within_100ms_of_a_publish(self, backend: RelayBackend) -> None:
        published_at: list[float] = []

        async def publish_later() -> None:
            await asyncio.sleep(0.3)
            published_at.append(time.monotonic())
            await _publish(backend)

        task = asyncio.create_task(publish_later())
        result = await _pull(backend, wait=10)
        returned_at = time.monotonic()
        await task
        assert [p["seq"] for p in result.posts] == [1]
        assert returned_at - published_at[0] < WAKE_BOUND_SECONDS

    @pytest.mark.asyncio
    async def test_long_poll_without_posts_waits_then_returns_empty(
        self, backend: RelayBackend
    ) -> None:
        started = time.monotonic()
        result = await _pull(backend, cursor=0, wait=0.4)
        elapsed = time.monotonic() - started
        assert result.posts == [] and result.cursor == 0
        assert 0.35 <= elapsed < 3.0

    @pytest.mark.asyncio
    async def test_long_poll_keeps_waiting_through_posts_it_does_not_want(
        self, backend: RelayBackend
    ) -> None:
        async def publish_later() -> None:
            await asyncio.sleep(0.1)
            await _publish(backend, requester_id="node_b")  # own post
            await _publish(backend, template="other_template")
            await asyncio.sleep(0.2)
            await _publish(backend, request_id="wanted")

        task = asyncio.create_task(publish_later())
        result = await _pull(backend, "node_b", wait=10)
        await task
        assert [p["request_id"] for p in result.posts] == ["wanted"]
        assert result.cursor == 3

    @pytest.mark.asyncio
    async def test_zero_wait_answers_at_once(self, backend: RelayBackend) -> None:
        started = time.monotonic()
        await _pull(backend, wait=0)
        assert time.monotonic() - started < 1.0

    # ---------------------------------------------------------------- registry

    @pytest.mark.asyncio
    async def test_register_replaces_and_lists_in_first_registration_order(
        self, backend: RelayBackend
    ) -> None:
        await backend.register_node(_node("node_a"))
        await backend.register_node(_node("node_b"))
        updated = _node("node_a", caps=(V1, "warm_intro_v2"))
        assert await backend.register_node(updated) == updated
        nodes = await backend.list_nodes()
        assert [n.node_id for n in nodes] == ["node_a", "node_b"]
        assert nodes[0] == updated

    @pytest.mark.asyncio
    async def test_aliases_resolve_to_their_node(self, backend: RelayBackend) -> None:
        await backend.register_node(_node("node_a"), ["p-1", "p-2"])
        assert await backend.resolve_recipient("node_a") == "node_a"
        assert await backend.resolve_recipient("p-1") == "node_a"
        assert await backend.resolve_recipient("p-2") == "node_a"
        assert await backend.resolve_recipient("nobody") is None

    @pytest.mark.asyncio
    async def test_re_register_replaces_the_alias_set(self, backend: RelayBackend) -> None:
        await backend.register_node(_node("node_a"), ["p-1", "p-2"])
        await backend.register_node(_node("node_a"), ["p-3"])
        assert await backend.resolve_recipient("p-1") is None
        assert await backend.resolve_recipient("p-3") == "node_a"
        await backend.register_node(_node("node_a"))
        assert await backend.resolve_recipient("p-3") is None

    @pytest.mark.asyncio
    async def test_aliases_are_never_listed(self, backend: RelayBackend) -> None:
        await backend.register_node(_node("node_a"), ["secret-pseudonym"])
        listed = [n.to_json() for n in await backend.list_nodes()]
        assert "secret-pseudonym" not in repr(listed)

    @pytest.mark.asyncio
    async def test_live_nodes_counts_recent_other_nodes_serving_the_template(
        self, backend: RelayBackend
    ) -> None:
        now = time.time()
        await backend.register_node(_node("node_a", caps=("warm_intro_v2",), seen=now))
        await backend.register_node(_node("node_b", caps=("warm_intro_v2", V1), seen=now))
        await backend.register_node(_node("node_old", caps=("warm_intro_v2",), seen=now - 600))
        await backend.register_node(_node("node_v1", caps=(V1,), seen=now))
        since = now - 60
        assert await backend.live_nodes("warm_intro_v2", since, exclude="node_a") == 1
        assert await backend.live_nodes("warm_intro_v2", since, exclude="someone") == 2
        assert await backend.live_nodes(V1, since, exclude="node_a") == 2
        # A pull makes a node live again, with the templates it pulled for.
        await backend.touch_node("node_old", ["warm_intro_v2"], now)
        assert await backend.live_nodes("warm_intro_v2", since, exclude="node_a") == 2
        await backend.touch_node("unregistered", ["warm_intro_v2"], now)
        assert await backend.live_nodes("warm_intro_v2", since, exclude="node_a") == 3

    # --------------------------------------------------------------- mailboxes

    async def _send(self, backend: RelayBackend, to: str = "node_b", sender: str = "node_a",
                    request_id: str = "r1", payload: str = "aGVsbG8=",
                    verified: bool = True) -> Any:
        return await backend.mailbox_send(to, sender, verified, request_id, payload, time.time())

    @pytest.mark.asyncio
    async def test_mailbox_delivers_in_send_order_with_fields(self, backend: RelayBackend) -> None:
        first = await self._send(backend, request_id="r1", verified=False)
        second = await self._send(backend, request_id="r2")
        assert first.id != second.id
        messages = await backend.mailbox_pull("node_b", 50, 0)
        assert messages == [first, second]
        assert messages[0].sender == "node_a" and messages[0].sender_verified is False
        assert messages[1].sender_verified is True
        assert messages[0].payload == "aGVsbG8=" and messages[0].to == "node_b"

    @pytest.mark.asyncio
    async def test_mailbox_redelivers_until_acked_then_never_again(
        self, backend: RelayBackend
    ) -> None:
        message = await self._send(backend)
        assert [m.id for m in await backend.mailbox_pull("node_b", 50, 0)] == [message.id]
        assert [m.id for m in await backend.mailbox_pull("node_b", 50, 0)] == [message.id]
        assert await backend.mailbox_ack("node_b", [message.id]) == 1
        assert await backend.mailbox_pull("node_b", 50, 0) == []
        assert await backend.mailbox_ack("node_b", [message.id]) == 0

    @pytest.mark.asyncio
    async def test_mailboxes_are_separate(self, backend: RelayBackend) -> None:
        message = await self._send(backend, to="node_b")
        assert await backend.mailbox_pull("node_c", 50, 0) == []
        assert await backend.mailbox_ack("node_c", [message.id]) == 0
        assert [m.id for m in await backend.mailbox_pull("node_b", 50, 0)] == [message.id]

    @pytest.mark.asyncio
    async def test_mailbox_limit_and_partial_ack(self, backend: RelayBackend) -> None:
        sent = [await self._send(backend, request_id=f"r{i}") for i in range(5)]
        page = await backend.mailbox_pull("node_b", 2, 0)
        assert [m.id for m in page] == [sent[0].id, sent[1].id]
        assert await backend.mailbox_ack("node_b", [sent[1].id, "unknown", sent[1].id]) == 1
        rest = await backend.mailbox_pull("node_b", 50, 0)
        assert [m.id for m in rest] == [sent[0].id, sent[2].id, sent[3].id, sent[4].id]

    @pytest.mark.asyncio
    async def test_mailbox_long_poll_wakes_on_send(self, backend: RelayBackend) -> None:
        sent_at: list[float] = []

        async def send_later() -> None:
            await asyncio.sleep(0.3)
            await self._send(backend, to="node_x")  # someone else's mail: keep waiting
            await asyncio.sleep(0.1)
            sent_at.append(time.monotonic())
            await self._send(backend)

        task = asyncio.create_task(send_later())
        messages = await backend.mailbox_pull("node_b", 50, 10)
        returned_at = time.monotonic()
        await task
        assert len(messages) == 1
        assert returned_at - sent_at[0] < WAKE_BOUND_SECONDS

    @pytest.mark.asyncio
    async def test_mailbox_long_poll_times_out_empty(self, backend: RelayBackend) -> None:
        started = time.monotonic()
        assert await backend.mailbox_pull("node_b", 50, 0.3) == []
        assert 0.25 <= time.monotonic() - started < 3.0

    # ----------------------------------------------------------------- replays

    @pytest.mark.asyncio
    async def test_remember_once_is_set_if_absent(self, backend: RelayBackend) -> None:
        assert await backend.remember_once("jti-1", 60) is True
        assert await backend.remember_once("jti-1", 60) is False
        assert await backend.remember_once("jti-2", 60) is True

    @pytest.mark.asyncio
    async def test_remember_once_forgets_after_ttl(self, backend: RelayBackend) -> None:
        assert await backend.remember_once("short", 0.2) is True
        await asyncio.sleep(0.35)
        assert await backend.remember_once("short", 60) is True
        assert await backend.remember_once("short", 60) is False

    @pytest.mark.asyncio
    async def test_remember_once_is_atomic_under_concurrency(self, backend: RelayBackend) -> None:
        results = await asyncio.gather(*(backend.remember_once("race", 60) for _ in range(25)))
        assert results.count(True) == 1

    # -------------------------------------------------------------- properties

    # One backend serves every example (fixtures are per test), so each example works
    # under names of its own and only above the seq it started from.
    @pytest.mark.asyncio
    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.differing_executors, HealthCheck.too_slow])
    @given(publishes=_publish_ops, pulls=_pull_ops)
    async def test_property_pull_is_exactly_the_v1_selection(
        self, backend: RelayBackend, publishes: list[tuple[str, str]],
        pulls: list[tuple[str, set[str], int, int]],
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        base = (await _publish(backend, requester_id=f"{tag}-marker",
                               template=f"{tag}-marker"))["seq"]
        model: list[tuple[int, str, str]] = []
        for requester, template in publishes:
            stored = await _publish(backend, requester_id=f"{tag}-{requester}",
                                    template=f"{tag}-{template}")
            model.append((stored["seq"], stored["requester_id"], stored["template"]))
        assert [seq for seq, _, _ in model] == list(range(base + 1, base + 1 + len(model)))
        for node, caps, offset, limit in pulls:
            node_id = f"{tag}-{node}"
            templates = {f"{tag}-{t}" for t in caps}
            cursor = base + offset
            expected_cursor, expected = reference_selection(model, node_id, templates, cursor,
                                                            limit)
            result = await backend.pull(node_id, sorted(templates), cursor, limit, 0, time.time())
            assert [p["seq"] for p in result.posts] == expected
            assert result.cursor == expected_cursor
            assert all(p["requester_id"] != node_id for p in result.posts)


Reopen = Callable[[], Awaitable[RelayBackend]]


class DurableRelayBackendContract:
    """What a durable backend keeps across a restart.

    Mix it into a :class:`RelayBackendContract` subclass and supply ``reopen``: an async
    callable that closes the current backend and returns a new started one on the same
    data; the fixture that opened them closes the last one at teardown.
    """

    @pytest.mark.asyncio
    async def test_posts_seq_and_epoch_survive_a_restart(
        self, backend: RelayBackend, reopen: Reopen
    ) -> None:
        epoch = await backend.epoch()
        stored = [await _publish(backend) for _ in range(3)]
        reopened = await reopen()
        assert await reopened.epoch() == epoch
        result = await _pull(reopened)
        assert result.posts == stored
        assert result.epoch == epoch
        assert (await _publish(reopened))["seq"] == 4

    @pytest.mark.asyncio
    async def test_seq_never_goes_back_after_expiry_and_restart(
        self, backend: RelayBackend, reopen: Reopen
    ) -> None:
        now = time.time()
        for _ in range(3):
            await backend.publish(make_post(), now + 5)
        await backend.purge_expired(now + 10)
        reopened = await reopen()
        assert (await _publish(reopened))["seq"] == 4

    @pytest.mark.asyncio
    async def test_registry_and_aliases_survive_a_restart(
        self, backend: RelayBackend, reopen: Reopen
    ) -> None:
        record = _node("node_a", caps=(V1, "warm_intro_v2"))
        await backend.register_node(record, ["p-1"])
        reopened = await reopen()
        assert await reopened.list_nodes() == [record]
        assert await reopened.resolve_recipient("p-1") == "node_a"

    @pytest.mark.asyncio
    async def test_unacked_mail_survives_and_acked_mail_stays_gone(
        self, backend: RelayBackend, reopen: Reopen
    ) -> None:
        now = time.time()
        kept = await backend.mailbox_send("node_b", "node_a", True, "r1", "AA==", now)
        acked = await backend.mailbox_send("node_b", "node_a", False, "r2", "AQ==", now)
        assert await backend.mailbox_ack("node_b", [acked.id]) == 1
        reopened = await reopen()
        assert await reopened.mailbox_pull("node_b", 50, 0) == [kept]

    @pytest.mark.asyncio
    async def test_remember_once_survives_a_restart(
        self, backend: RelayBackend, reopen: Reopen
    ) -> None:
        assert await backend.remember_once("jti", 60) is True
        reopened = await reopen()
        assert await reopened.remember_once("jti", 60) is False
