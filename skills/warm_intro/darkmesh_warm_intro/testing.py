"""A loopback mesh for testing warm-intro nodes in one process, without a relay server.

:class:`LoopbackMesh` gives every node a relay client with the two calls the skill
uses (``publish``, ``mailbox_send``) and delivers posts and mailbox messages to the
other nodes' skills as the core's listener would (``handle_post`` /
``handle_mailbox``), in background tasks. Everything sent is recorded, so tests can
inspect exactly what each node received.

For full HTTP coverage use ``sdl_core.testing.mesh.InProcessMesh`` or real processes;
this one keeps protocol tests fast and deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darkmesh_warm_intro import plugin
from darkmesh_warm_intro.skill import WarmIntroSkill
from sdl_core import Host, MailboxMessage


@dataclass
class Sent:
    """One mailbox message as the relay saw it."""

    message: MailboxMessage
    raw: bytes


@dataclass
class MeshNode:
    node_id: str
    host: Host
    skill: WarmIntroSkill
    inbox: list[Sent] = field(default_factory=list)
    posts_seen: list[dict[str, Any]] = field(default_factory=list)
    online: bool = True


class LoopbackRelayClient:
    """The subset of ``sdl_core.relay.client.RelayClient`` the skill calls."""

    def __init__(self, mesh: LoopbackMesh, node_id: str) -> None:
        self.mesh = mesh
        self.node_id = node_id

    async def aclose(self) -> None:
        """Nothing to release (the host calls this at stop)."""

    async def publish(self, post: dict[str, Any]) -> dict[str, Any]:
        if self.mesh.relay_down:
            raise ConnectionError("relay unreachable")
        stored = {**post, "post_id": secrets.token_hex(6), "seq": self.mesh.next_seq(),
                  "created_at": time.time()}
        live = 0
        for node in self.mesh.nodes.values():
            if node.node_id == self.node_id or not node.online:
                continue
            live += 1
            self.mesh.spawn(self.mesh.deliver_post(node, stored))
        return {"ok": True, "post_id": stored["post_id"], "seq": stored["seq"],
                "live_nodes": live}

    async def mailbox_send(self, to: str, request_id: str, payload: bytes) -> dict[str, Any]:
        if self.mesh.relay_down:
            raise ConnectionError("relay unreachable")
        message = MailboxMessage(
            id=secrets.token_hex(8), to=to, sender=self.node_id,
            sender_verified=self.mesh.verified_senders, request_id=request_id,
            payload=base64.b64encode(payload).decode("ascii"), created_at=time.time(),
        )
        self.mesh.sent.append(Sent(message=message, raw=payload))
        node = self.mesh.nodes.get(to)
        if node is not None:
            self.mesh.spawn(self.mesh.deliver_message(node, Sent(message=message, raw=payload)))
        return {"ok": True, "id": message.id}


class LoopbackMesh:
    """N warm-intro nodes wired to one in-memory relay."""

    def __init__(self, root: Path, *, verified_senders: bool = True) -> None:
        self.root = root
        self.nodes: dict[str, MeshNode] = {}
        self.sent: list[Sent] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.verified_senders = verified_senders
        self.relay_down = False
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deliver_post(self, node: MeshNode, post: dict[str, Any]) -> None:
        node.posts_seen.append(post)
        if node.online:
            await node.skill.handle_post(post)

    async def deliver_message(self, node: MeshNode, sent: Sent) -> None:
        node.inbox.append(sent)
        if node.online:
            await node.skill.handle_mailbox(sent.message)

    async def add_node(
        self, node_id: str, *, contacts: Iterable[Mapping[str, Any]] = (),
        interactions: Iterable[Mapping[str, Any]] = (), self_identifiers: Iterable[str] = (),
        warm_intro: Mapping[str, Any] | None = None, start: bool = True,
    ) -> MeshNode:
        """Create (or re-create after :meth:`restart`) a node with its data."""
        from sdl_core.testing.host import make_host

        data_dir = self.root / node_id
        tables = {"warm_intro": {"response_wait_seconds": 5.0, **(warm_intro or {})}}
        host = make_host(plugin, node_id=node_id, data_dir=str(data_dir), tables=tables,
                         relay_url="http://relay.loopback.invalid", relay_key="loopback",
                         self_identifiers=list(self_identifiers), store="memory")
        host.prepare()
        host.relay = LoopbackRelayClient(self, node_id)  # type: ignore[assignment]
        contacts, interactions = list(contacts), list(interactions)
        if contacts:
            await host.store.upsert("contacts", [dict(c) for c in contacts])
        if interactions:
            await host.store.upsert("interactions", [dict(i) for i in interactions])
        if start:
            await host.start()
        skill = host.skills["warm-intro"]
        assert isinstance(skill, WarmIntroSkill)
        node = MeshNode(node_id=node_id, host=host, skill=skill)
        self.nodes[node_id] = node
        return node

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every delivery (and what it triggered) is done."""
        deadline = time.monotonic() + timeout
        while self.tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("loopback mesh deliveries did not finish")
            await asyncio.wait(set(self.tasks), timeout=remaining)

    async def close(self) -> None:
        await self.drain()
        for node in self.nodes.values():
            await node.host.stop()


async def add_demo_node(mesh: LoopbackMesh, letter: str, **warm_intro: Any) -> MeshNode:
    """``node_<letter>`` of the shipped demo (its CSVs and self identifier), on ``mesh``;
    ``warm_intro`` overrides settings of its ``[warm_intro]`` table."""
    from darkmesh_warm_intro.cluster import demo_rows
    from darkmesh_warm_intro.demo import SELF_IDENTIFIERS

    node_id = f"node_{letter}"
    return await mesh.add_node(
        node_id, contacts=demo_rows(f"{node_id}_contacts.csv"),
        interactions=demo_rows(f"{node_id}_interactions.csv"),
        self_identifiers=[SELF_IDENTIFIERS[node_id]], warm_intro=warm_intro or None,
    )


@asynccontextmanager
async def demo_mesh(root: Path, letters: str = "abc") -> AsyncIterator[LoopbackMesh]:
    """A mesh of the demo nodes ``node_<letter>`` for the block, closed after it."""
    mesh = LoopbackMesh(root)
    try:
        for letter in letters:
            await add_demo_node(mesh, letter)
        yield mesh
    finally:
        await mesh.close()
