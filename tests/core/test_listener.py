"""The listener inside a node, against a real relay app (in-process, no sockets)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from sdl_core.host import Host, RelayHost
from sdl_core.listener import Backoff, Listener
from sdl_core.plugins import hookimpl, make_plugin_manager
from sdl_core.protocols import JSONObject, MailboxMessage
from sdl_core.relay.app import create_relay_app
from sdl_core.relay.client import RelayClient
from sdl_core.settings import NodeSettings, RelaySettings
from sdl_core.specs import RouteSpec, SkillSpec

KEY = "relay-secret"
V1, V2 = "warm_intro_v1", "warm_intro_v2"


class RecordingSkill:
    """Records what the listener hands it; fails on demand."""

    def __init__(self, name: str, mailbox_answer: bool = False) -> None:
        self.name = name
        self.posts: list[JSONObject] = []
        self.mail: list[MailboxMessage] = []
        self.mailbox_answer = mailbox_answer
        self.fail_on: set[str] = set()

    def routes(self) -> Sequence[RouteSpec]:
        return []

    async def handle_post(self, post: JSONObject) -> None:
        if post.get("request_id") in self.fail_on:
            raise RuntimeError("skill bug")
        self.posts.append(post)

    async def handle_mailbox(self, message: MailboxMessage) -> bool:
        self.mail.append(message)
        if message.request_id in self.fail_on:
            raise RuntimeError("skill bug")
        return self.mailbox_answer

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> JSONObject:
        return {}


class SkillsPlugin:
    """Two skills: ``v1-skill`` serves v1 and refuses mail; ``v2-skill`` takes v2 and mail."""

    __name__ = "listener-test-skills"

    def __init__(self) -> None:
        self.v1 = RecordingSkill("v1-skill", mailbox_answer=False)
        self.v2 = RecordingSkill("v2-skill", mailbox_answer=True)

    @hookimpl
    def darkmesh_register_skills(self) -> Iterator[SkillSpec]:
        yield SkillSpec(name="v1-skill", factory=lambda h, s: self.v1, templates=(V1,))
        yield SkillSpec(name="v2-skill", factory=lambda h, s: self.v2, templates=(V2,))


class SwitchableApp:
    """An ASGI app whose target can be swapped (relay restart) or taken down."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.down = False
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
            if self.down:
                raise httpx.ConnectError("relay down")
        await self.app(scope, receive, send)


async def start_relay(tmp_path: Path) -> RelayHost:
    pm = make_plugin_manager(only={"darkmesh-sdl.memory"})
    relay = RelayHost(pm, RelaySettings(key=SecretStr(KEY), backend="memory", data_dir=tmp_path,
                                        auth_mode="hmac"))
    await relay.start()
    return relay


def make_node(transport: httpx.AsyncBaseTransport, data_dir: Path, plugin: SkillsPlugin,
              node_id: str = "node_b", **overrides: Any) -> Host:
    values: dict[str, Any] = {
        "node_id": node_id, "relay_url": "http://relay.test", "relay_key": KEY,
        "auth_mode": "hmac", "node_key": "node-secret", "peer_key": "peer-secret",
        "store": "memory", "data_dir": data_dir, "listener_wait_seconds": 2.0,
    }
    values.update(overrides)
    pm = make_plugin_manager(only={"darkmesh-sdl.memory-store"}, plugins=[plugin], environ={})
    return Host(pm, NodeSettings(**values), transport=transport)


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Mesh:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.relay: RelayHost | None = None
        self.switch: SwitchableApp | None = None
        self.nodes: list[Host] = []
        self.plugin = SkillsPlugin()

    async def start(self) -> None:
        self.relay = await start_relay(self.tmp_path / "relay")
        self.switch = SwitchableApp(create_relay_app(self.relay))

    @property
    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.switch)  # type: ignore[arg-type]

    async def node(self, node_id: str = "node_b", **overrides: Any) -> Host:
        host = make_node(self.transport, self.tmp_path / node_id, self.plugin, node_id,
                         **overrides)
        await host.start()
        self.nodes.append(host)
        return host

    def sender(self, node_id: str = "node_a") -> RelayClient:
        host = make_node(self.transport, self.tmp_path / f"sender-{node_id}", SkillsPlugin(),
                         node_id, listener=False)
        host.transport = self.transport
        return RelayClient(host)

    async def restart_relay(self) -> None:
        assert self.relay is not None and self.switch is not None
        await self.relay.stop()
        self.relay = await start_relay(self.tmp_path / "relay2")
        self.switch.app = create_relay_app(self.relay)

    async def stop(self) -> None:
        for host in self.nodes:
            await host.stop()
        if self.relay is not None:
            await self.relay.stop()


@pytest_asyncio.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    value = Mesh(tmp_path)
    await value.start()
    yield value
    await value.stop()


def v1_post(request_id: str, template: str = V1, requester: str = "node_a") -> JSONObject:
    return {"request_id": request_id, "requester_id": requester,
            "requester_url": "http://localhost:8001", "template": template,
            "response_token": "t" * 32}


# ---------------------------------------------------------------------- posts


@pytest.mark.asyncio
async def test_posts_are_dispatched_by_template(mesh: Mesh) -> None:
    node = await mesh.node()
    assert node.listener is not None
    sender = mesh.sender()
    await sender.publish(v1_post("r1"))
    await sender.publish(v1_post("r2", template=V2))
    await sender.publish(v1_post("r3", template="other"))
    await eventually(lambda: len(mesh.plugin.v1.posts) == 1 and len(mesh.plugin.v2.posts) == 1)
    assert mesh.plugin.v1.posts[0]["request_id"] == "r1"
    assert mesh.plugin.v2.posts[0]["request_id"] == "r2"
    # Registration advertised both skills' templates, so the node counts as live.
    assert mesh.relay is not None
    nodes = await mesh.relay.backend.list_nodes()
    assert [(n.node_id, set(n.capabilities)) for n in nodes] == [("node_b", {V1, V2})]


@pytest.mark.asyncio
async def test_long_poll_delivers_promptly(mesh: Mesh) -> None:
    node = await mesh.node(listener_wait_seconds=30.0)
    assert node.listener is not None
    assert mesh.switch is not None
    # register, posts/pull and mailbox/pull have reached the relay
    await eventually(lambda: mesh.switch is not None and mesh.switch.calls >= 3)
    await asyncio.sleep(0.3)  # the listener is now parked in a long-poll
    parked_calls = mesh.switch.calls
    await asyncio.sleep(1.5)
    assert mesh.switch.calls == parked_calls  # parked, not polling
    started = time.monotonic()
    await mesh.sender().publish(v1_post("fast"))
    await eventually(lambda: len(mesh.plugin.v1.posts) == 1)
    assert time.monotonic() - started < 10  # woken by the publish, not by its 30 s wait


@pytest.mark.asyncio
async def test_a_failing_skill_does_not_stop_the_listener(mesh: Mesh) -> None:
    mesh.plugin.v1.fail_on.add("boom")
    await mesh.node()
    sender = mesh.sender()
    await sender.publish(v1_post("boom"))
    await sender.publish(v1_post("after"))
    await eventually(lambda: [p["request_id"] for p in mesh.plugin.v1.posts] == ["after"])


@pytest.mark.asyncio
async def test_cursor_is_persisted_with_the_epoch(mesh: Mesh) -> None:
    node = await mesh.node()
    sender = mesh.sender()
    for i in range(3):
        await sender.publish(v1_post(f"r{i}"))
    await eventually(lambda: len(mesh.plugin.v1.posts) == 3)
    assert mesh.relay is not None
    epoch = await mesh.relay.backend.epoch()
    saved = node.state("listener").get("position")
    await eventually(lambda: node.state("listener").get("position") == {"cursor": 3,
                                                                        "epoch": epoch})
    assert saved is not None
    # A new listener on the same node resumes there: nothing is handed over twice.
    assert node.listener is not None
    await node.listener.stop()
    await sender.publish(v1_post("r3"))
    resumed = Listener(node)
    await resumed.start()
    try:
        await eventually(lambda: len(mesh.plugin.v1.posts) == 4)
        await asyncio.sleep(0.2)
        assert [p["request_id"] for p in mesh.plugin.v1.posts] == ["r0", "r1", "r2", "r3"]
    finally:
        await resumed.stop()


@pytest.mark.asyncio
async def test_a_relay_reset_restarts_the_cursor(mesh: Mesh) -> None:
    node = await mesh.node()
    for i in range(5):
        await mesh.sender().publish(v1_post(f"old{i}"))
    await eventually(lambda: len(mesh.plugin.v1.posts) == 5)
    await mesh.restart_relay()  # new data, new epoch, seq starts again at 1
    await mesh.sender().publish(v1_post("after-reset"))
    await eventually(lambda: mesh.plugin.v1.posts[-1]["request_id"] == "after-reset", 8)
    assert node.listener is not None
    status = node.listener.status()
    assert status["epoch_resets"] == 1
    assert mesh.relay is not None
    assert status["epoch"] == await mesh.relay.backend.epoch()
    assert status["cursor"] == 1


@pytest.mark.asyncio
async def test_backoff_while_the_relay_is_down(mesh: Mesh) -> None:
    assert mesh.switch is not None
    mesh.switch.down = True
    node = await mesh.node()
    assert node.listener is not None
    await asyncio.sleep(1.5)
    # Three loops retrying with exponential backoff from 0.5 s: a handful of calls,
    # not a busy loop.
    assert mesh.switch.calls <= 15
    assert "relay down" in (node.listener.status()["last_error"] or "")
    mesh.switch.down = False
    await mesh.sender().publish(v1_post("back"))
    await eventually(lambda: len(mesh.plugin.v1.posts) == 1, 8)


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=4)
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


# -------------------------------------------------------------------- mailbox


@pytest.mark.asyncio
async def test_mailbox_messages_reach_the_first_skill_that_takes_them(mesh: Mesh) -> None:
    node = await mesh.node()
    assert mesh.relay is not None
    await eventually(lambda: mesh.relay is not None and node.listener is not None
                     and node.listener.status()["registered_at"] is not None)
    sender = mesh.sender()
    await sender.mailbox_send("node_b", "req-1", b"one")
    await sender.mailbox_send("node_b", "req-2", b"two")
    await eventually(lambda: len(mesh.plugin.v2.mail) == 2)
    # v1-skill saw them first and declined; v2-skill took them; then they were acked.
    assert [m.request_id for m in mesh.plugin.v1.mail] == ["req-1", "req-2"]
    await eventually(lambda: _mailbox_empty(mesh.relay, "node_b"))
    assert node.listener is not None
    assert node.listener.status()["mailbox_handled"] == 2


async def _mailbox_empty(relay: RelayHost | None, node_id: str) -> bool:
    assert relay is not None
    return await relay.backend.mailbox_pull(node_id, 50, 0) == []


@pytest.mark.asyncio
async def test_unhandled_mail_is_acked_so_it_does_not_loop(mesh: Mesh) -> None:
    mesh.plugin.v2.mailbox_answer = False
    mesh.plugin.v2.fail_on.add("bad")
    node = await mesh.node()
    await eventually(lambda: node.listener is not None
                     and node.listener.status()["registered_at"] is not None)
    await mesh.sender().mailbox_send("node_b", "bad", b"x")
    await mesh.sender().mailbox_send("node_b", "nobody", b"y")
    await eventually(lambda: node.listener is not None
                     and node.listener.status()["mailbox_unhandled"] == 2)
    await eventually(lambda: _mailbox_empty(mesh.relay, "node_b"))
    await asyncio.sleep(0.2)
    assert len(mesh.plugin.v2.mail) == 2  # offered once each, not redelivered in a loop


@pytest.mark.asyncio
async def test_aliases_are_registered_and_receive_mail(mesh: Mesh) -> None:
    node = await mesh.node()
    assert node.listener is not None
    await node.listener.add_aliases("pseudo-1", "pseudo-2")
    assert node.listener.aliases == ["pseudo-1", "pseudo-2"]
    assert mesh.relay is not None
    assert await mesh.relay.backend.resolve_recipient("pseudo-2") == "node_b"
    await mesh.sender().mailbox_send("pseudo-1", "via-alias", b"z")
    await eventually(lambda: [m.request_id for m in mesh.plugin.v2.mail] == ["via-alias"])
    await node.listener.remove_aliases("pseudo-1")
    assert await mesh.relay.backend.resolve_recipient("pseudo-1") is None
    assert await mesh.relay.backend.resolve_recipient("pseudo-2") == "node_b"


@pytest.mark.asyncio
async def test_aliases_set_before_start_go_into_the_first_registration(mesh: Mesh) -> None:
    host = make_node(mesh.transport, mesh.tmp_path / "early", mesh.plugin, "node_e",
                     listener=False)
    await host.start()
    mesh.nodes.append(host)
    host.relay = RelayClient(host)
    listener = Listener(host)
    await listener.set_aliases(["early-alias"])
    await listener.start()
    try:
        assert mesh.relay is not None
        await eventually(lambda: _resolves(mesh.relay, "early-alias", "node_e"))
    finally:
        await listener.stop()


async def _resolves(relay: RelayHost | None, alias: str, node_id: str) -> bool:
    assert relay is not None
    return await relay.backend.resolve_recipient(alias) == node_id


# ------------------------------------------------------------- upstream relay


@pytest.mark.asyncio
async def test_an_upstream_relay_is_polled_every_second(tmp_path: Path) -> None:
    pulls: list[tuple[float, JSONObject]] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        if request.url.path.endswith("/posts/pull"):
            pulls.append((time.monotonic(), body))
            posts = [{"seq": 1, "request_id": "u1", "template": V1, "requester_id": "x"}] \
                if body["cursor"] == 0 else []
            return httpx.Response(200, json={"node_id": body["node_id"], "cursor": 1,
                                             "posts": posts})
        if request.url.path.endswith("/nodes/register"):
            return httpx.Response(200, json={"ok": True, "node": {}})
        return httpx.Response(404, json={"detail": "Not Found"})

    plugin = SkillsPlugin()
    node = make_node(httpx.MockTransport(upstream), tmp_path / "n", plugin)
    await node.start()
    try:
        await asyncio.sleep(2.3)
        assert node.listener is not None
        status = node.listener.status()
        assert status["upstream_relay"] is True and status["mailbox_supported"] is False
        assert [p["request_id"] for p in plugin.v1.posts] == ["u1"]
        assert 2 <= len(pulls) <= 4
        assert all("wait" not in body for _, body in pulls[1:])
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(pulls)]
        assert all(gap >= 0.9 for gap in gaps)
        assert node.state("listener").get("position") == {"cursor": 1, "epoch": None}
    finally:
        await node.stop()
