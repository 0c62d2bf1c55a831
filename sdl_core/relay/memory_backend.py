"""The ``memory`` relay backend: everything in one process's memory (tests, demos).

Waiting is asyncio-based (:class:`~sdl_core.relay.waiting.ChangeNotifier`), so a
long-poll wakes as soon as a publish or a mailbox send lands in the same process. The
epoch is fresh per instance: a restart loses the data, and listeners see a new epoch.
Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import bisect
import copy
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from sdl_core.protocols import JSONObject, MailboxMessage, NodeRecord, PullResult
from sdl_core.relay.waiting import (
    MAILBOX_RETENTION_SECONDS,
    ChangeNotifier,
    long_poll,
    new_epoch,
    new_message_id,
    new_post_id,
    selects,
)


class MemoryRelayBackend:
    """:class:`sdl_core.RelayBackend` kept in dicts and lists."""

    name = "memory"

    def __init__(self) -> None:
        self._epoch = new_epoch()
        self._seq = 0
        self._posts: list[JSONObject] = []  # in seq order
        self._seqs: list[int] = []  # parallel to _posts, for bisect
        self._nodes: dict[str, NodeRecord] = {}
        self._aliases: dict[str, str] = {}
        self._presence: dict[str, tuple[frozenset[str], float]] = {}
        self._mailboxes: dict[str, OrderedDict[str, MailboxMessage]] = {}
        self._onces: dict[str, float] = {}
        self._posts_changed = ChangeNotifier()
        self._mail_changed = ChangeNotifier()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def epoch(self) -> str:
        return self._epoch

    # ------------------------------------------------------------------ registry

    async def register_node(self, record: NodeRecord, aliases: Sequence[str] = ()) -> NodeRecord:
        # Assigning an existing key keeps its position: nodes list in first-registration
        # order, as upstream's dict does.
        self._nodes[record.node_id] = record
        for alias, owner in list(self._aliases.items()):
            if owner == record.node_id:
                del self._aliases[alias]
        for alias in aliases:
            self._aliases[alias] = record.node_id
        self._presence[record.node_id] = (frozenset(record.capabilities), record.last_seen)
        return record

    async def list_nodes(self) -> list[NodeRecord]:
        return list(self._nodes.values())

    async def touch_node(self, node_id: str, capabilities: Sequence[str], now: float) -> None:
        self._presence[node_id] = (frozenset(capabilities), now)

    async def live_nodes(self, template: str, since: float, exclude: str) -> int:
        return sum(
            1
            for node_id, (caps, seen) in self._presence.items()
            if node_id != exclude and seen >= since and template in caps
        )

    async def resolve_recipient(self, to: str) -> str | None:
        if to in self._nodes:
            return to
        return self._aliases.get(to)

    # --------------------------------------------------------------------- posts

    async def publish(self, post: JSONObject, expires_at: float) -> JSONObject:
        self._seq += 1
        stored: JSONObject = {"seq": self._seq, "post_id": new_post_id(), **copy.deepcopy(post)}
        stored["expires_at"] = expires_at
        self._posts.append(stored)
        self._seqs.append(self._seq)
        await self._posts_changed.notify()
        return copy.deepcopy(stored)

    def _select(
        self, node_id: str, caps: frozenset[str], cursor: int, limit: int, now: float
    ) -> tuple[int, list[JSONObject]]:
        out_cursor = cursor
        selected: list[JSONObject] = []
        start = bisect.bisect_right(self._seqs, cursor)
        for post in self._posts[start:]:
            if post["expires_at"] <= now:
                continue  # expired posts count as purged: not examined
            out_cursor = max(out_cursor, int(post["seq"]))
            if not selects(post["template"], post["requester_id"], node_id, caps):
                continue
            selected.append(copy.deepcopy(post))
            if len(selected) >= limit:
                break
        return out_cursor, selected

    async def pull(
        self,
        node_id: str,
        capabilities: Sequence[str],
        cursor: int,
        limit: int,
        wait: float,
        now: float,
    ) -> PullResult:
        caps = frozenset(capabilities)

        async def look(elapsed: float) -> PullResult:
            nonlocal cursor
            cursor, selected = self._select(node_id, caps, cursor, limit, now + elapsed)
            # The advanced cursor: posts examined once are not examined again on wake-up.
            return PullResult(cursor=cursor, posts=selected, epoch=self._epoch)

        return await long_poll(self._posts_changed, wait, look, lambda r: bool(r.posts))

    async def count_posts(self, now: float) -> int:
        return sum(1 for post in self._posts if post["expires_at"] > now)

    async def purge_expired(self, now: float) -> int:
        kept = [post for post in self._posts if post["expires_at"] > now]
        removed = len(self._posts) - len(kept)
        if removed:
            self._posts = kept
            self._seqs = [int(post["seq"]) for post in kept]
        for key, expires in list(self._onces.items()):
            if expires <= now:
                del self._onces[key]
        horizon = now - MAILBOX_RETENTION_SECONDS
        for box in self._mailboxes.values():
            for message_id, message in list(box.items()):
                if message.created_at < horizon:
                    del box[message_id]
        return removed

    # ----------------------------------------------------------------- mailboxes

    async def mailbox_send(
        self, to_node: str, sender: str, sender_verified: bool, request_id: str, payload: str,
        now: float,
    ) -> MailboxMessage:
        message = MailboxMessage(
            id=new_message_id(), to=to_node, sender=sender, sender_verified=sender_verified,
            request_id=request_id, payload=payload, created_at=now,
        )
        self._mailboxes.setdefault(to_node, OrderedDict())[message.id] = message
        await self._mail_changed.notify()
        return replace(message)

    async def mailbox_pull(self, node_id: str, limit: int, wait: float) -> list[MailboxMessage]:
        async def look(elapsed: float) -> list[MailboxMessage]:
            box = self._mailboxes.get(node_id)
            return [replace(m) for m in list(box.values())[:limit]] if box else []

        return await long_poll(self._mail_changed, wait, look, bool)

    async def mailbox_ack(self, node_id: str, ids: Sequence[str]) -> int:
        box = self._mailboxes.get(node_id)
        if not box:
            return 0
        removed = 0
        for message_id in set(ids):
            if box.pop(message_id, None) is not None:
                removed += 1
        return removed

    # ------------------------------------------------------------------- replays

    async def remember_once(self, key: str, ttl: float) -> bool:
        now = time.time()
        expires = self._onces.get(key)
        if expires is not None and expires > now:
            return False
        self._onces[key] = now + ttl
        return True
