"""The ``redis`` relay backend: state in Redis, so relay processes stay stateless.

Layout (see :mod:`darkmesh_redis.keys`): posts are a Stream whose entry ids are the
integer ``seq`` (``<seq>-0``), with bodies in a hash and expiry in a sorted set; each
mailbox is a Stream; the registry is one hash per node plus an alias hash; liveness is a
sorted set per template. Writes that touch several keys are Lua scripts
(:mod:`darkmesh_redis.scripts`), so concurrent relay processes cannot interleave them.

The epoch and the seq counter live in one hash: relays on the same Redis report the
same epoch, and a Redis that lost its data (restart without persistence, FLUSHALL)
yields a new epoch with seq restarting at 1, which tells every listener to start over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from darkmesh_redis import scripts
from darkmesh_redis.connection import RedisConnection
from darkmesh_redis.keys import Keys
from darkmesh_redis.settings import RedisSettings
from darkmesh_redis.watcher import BLOCK_SLICE_SECONDS, EventWatcher, Signals
from sdl_core import (
    HTTPProblem,
    JSONObject,
    MailboxMessage,
    NodeRecord,
    PullResult,
    RelayUnavailable,
    long_poll,
)

log = logging.getLogger("darkmesh.redis")

#: Stream entries one pull script examines before handing back (keeps Redis responsive).
PULL_SCAN_BUDGET = 2048
#: Expired posts / old mailboxes removed per purge script call.
PURGE_BATCH = 500
#: A retried publish or send within this window is recognised and not applied twice.
DEDUPE_TTL_MS = 120_000
#: Largest seq that fits a stream id part (2**64 - 1), less one for the ``+1``.
MAX_CURSOR = 2**64 - 2
#: Selections restarted because the data vanished mid-pull, before giving up.
MAX_EPOCH_RESTARTS = 3
_MESSAGE_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _num(value: float) -> str:
    """A float as Redis and Lua read it back exactly."""
    return repr(float(value))


def _valid_message_id(message_id: str) -> bool:
    if not _MESSAGE_ID.match(message_id):
        return False
    ms, _, n = message_id.partition("-")
    return int(ms) < 2**64 and int(n) < 2**64


class RedisRelayBackend:
    """:class:`sdl_core.RelayBackend` on Redis (redis-py asyncio)."""

    name = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._conn = RedisConnection(settings)
        self._signals = Signals()
        self._watcher: EventWatcher | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._last_epoch = ""
        #: Entries one pull script may examine; tests shrink it to exercise paging.
        self.scan_budget = PULL_SCAN_BUDGET

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect, check the server, fix the epoch, start the watcher and the janitor.

        :raises sdl_core.StartupError: Redis is unreachable or too old; the message names
            ``DARKMESH_REDIS_URL``.
        """
        if self._watcher is not None:
            return
        await self._conn.open()
        client = self._conn.client
        for name in ("EPOCH", "PUBLISH", "PULL_PAGE", "PURGE_POSTS", "TOUCH", "REGISTER",
                     "LIVE_NODES", "TRIM_LIVE", "MAILBOX_SEND", "MAILBOX_ACK",
                     "PURGE_MAILBOXES"):
            self._scripts[name] = client.register_script(getattr(scripts, name))
        await self.epoch()
        await self._warn_without_persistence()
        # The watcher blocks up to one slice, so its reads may take that much longer.
        watcher_client = self._conn.new_client(
            max_connections=1,
            socket_timeout=self.settings.socket_timeout_seconds + BLOCK_SLICE_SECONDS,
        )
        self._watcher = EventWatcher(watcher_client, self.keys.events, self._signals)
        self._watcher.start()
        self._janitor = asyncio.create_task(self._janitor_loop(), name="darkmesh-redis-janitor")

    async def close(self) -> None:
        janitor, self._janitor = self._janitor, None
        if janitor is not None:
            janitor.cancel()
            try:
                await janitor
            except asyncio.CancelledError:
                pass
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop(self._conn.client)
        self._signals.fire_all()
        await self._conn.close()

    async def _warn_without_persistence(self) -> None:
        try:
            config = await self._conn.client.config_get("appendonly")
            save = await self._conn.client.config_get("save")
        except redis_errors.RedisError:  # CONFIG is often disabled on managed Redis
            return
        if config.get("appendonly") != "yes" and not save.get("save"):
            log.warning(
                "darkmesh-redis: Redis at %s has no persistence (appendonly no, save \"\"): "
                "a Redis restart loses every post and mailbox (listeners see a new epoch)",
                self._conn.where,
            )

    async def _janitor_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.settings.purge_interval_seconds)
            try:
                await self.purge_expired(time.time())
                await self._trim_presence(time.time())
                failing = False
            except HTTPProblem as exc:
                if not failing:
                    log.warning("darkmesh-redis: periodic trim failed: %s", exc.detail)
                failing = True

    def status(self) -> JSONObject:
        """For ``darkmesh status``: where Redis is and whether the watcher sees it."""
        watcher = self._watcher
        return {
            "backend": self.name,
            "url": self._conn.where,
            "key_prefix": self.settings.key_prefix,
            "epoch": self._last_epoch,
            "events_stream": "ok" if watcher is not None and watcher.healthy else (
                watcher.last_error if watcher is not None else "not started"
            ),
        }

    async def _script(self, what: str, name: str, keys: Sequence[str],
                      args: Sequence[str | int | float]) -> Any:
        script = self._scripts[name]

        async def call(client: Redis) -> Any:
            return await script(keys=list(keys), args=list(args), client=client)

        return await self._conn.run(what, call)

    # ------------------------------------------------------------------- epoch

    def _post_keys(self) -> list[str]:
        k = self.keys
        return [k.meta, k.posts, k.post_bodies, k.post_expiry]

    async def epoch(self) -> str:
        epoch = str(await self._script("epoch", "EPOCH", self._post_keys(),
                                       [secrets.token_hex(16)]))
        self._last_epoch = epoch
        return epoch

    # ------------------------------------------------------------------ registry

    async def register_node(self, record: NodeRecord, aliases: Sequence[str] = ()) -> NodeRecord:
        k = self.keys
        caps = list(dict.fromkeys(record.capabilities))
        unique_aliases = list(dict.fromkeys(aliases))
        horizon = record.last_seen - self.settings.presence_retention_seconds
        await self._script(
            "register", "REGISTER",
            [k.node(record.node_id), k.node_order, k.node_counter, k.aliases,
             k.node_aliases(record.node_id)],
            [k.prefix, record.node_id, record.url, _dumps(list(record.capabilities)),
             _num(record.last_seen), _num(horizon), self._presence_ttl_ms(), len(caps),
             *caps, *unique_aliases],
        )
        return record

    async def list_nodes(self) -> list[NodeRecord]:
        k = self.keys

        async def read(client: Redis) -> list[tuple[str, dict[str, str]]]:
            ids = [str(i) for i in await client.zrange(k.node_order, 0, -1)]
            if not ids:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for node_id in ids:
                    pipe.hgetall(k.node(node_id))
                rows = await pipe.execute()
            return list(zip(ids, rows, strict=True))

        out = []
        for node_id, row in await self._conn.run("list nodes", read):
            if not row:
                continue
            out.append(NodeRecord(
                node_id=node_id,
                url=row.get("url", ""),
                capabilities=tuple(json.loads(row.get("capabilities", "[]"))),
                last_seen=float(row.get("last_seen", 0.0)),
            ))
        return out

    def _presence_ttl_ms(self) -> int:
        return int(self.settings.presence_retention_seconds * 1000)

    async def touch_node(self, node_id: str, capabilities: Sequence[str], now: float) -> None:
        caps = list(dict.fromkeys(capabilities))
        horizon = now - self.settings.presence_retention_seconds
        await self._script(
            "touch node", "TOUCH", [],
            [self.keys.prefix, node_id, _num(now), _num(horizon), self._presence_ttl_ms(),
             *caps],
        )

    async def live_nodes(self, template: str, since: float, exclude: str) -> int:
        return int(await self._script(
            "live nodes", "LIVE_NODES", [self.keys.live(template)], [_num(since), exclude]
        ))

    async def _trim_presence(self, now: float) -> None:
        k = self.keys
        horizon = _num(now - self.settings.presence_retention_seconds)
        cursor = 0
        while True:
            async def scan(client: Redis, at: int = cursor) -> tuple[int, list[str]]:
                next_cursor, members = await client.sscan(k.live_templates, at, count=200)
                return int(next_cursor), [str(m) for m in members]

            cursor, templates = await self._conn.run("trim presence", scan)
            if templates:
                await self._script("trim presence", "TRIM_LIVE", [k.live_templates],
                                   [k.prefix, horizon, *templates])
            if int(cursor) == 0:
                return

    async def resolve_recipient(self, to: str) -> str | None:
        k = self.keys

        async def read(client: Redis) -> str | None:
            if await client.exists(k.node(to)):
                return to
            owner = await client.hget(k.aliases, to)
            return str(owner) if owner is not None else None

        return await self._conn.run("resolve recipient", read)

    # --------------------------------------------------------------------- posts

    async def publish(self, post: JSONObject, expires_at: float) -> JSONObject:
        k = self.keys
        post_id = secrets.token_hex(6)
        body = dict(post)
        body["expires_at"] = expires_at
        stored = {"post_id": post_id, **body}
        epoch, seq = await self._script(
            "publish", "PUBLISH",
            [*self._post_keys(), k.events, k.post_dedupe(post_id)],
            [secrets.token_hex(16), str(post.get("requester_id", "")),
             str(post.get("template", "")), _num(expires_at), _dumps(stored),
             self.settings.posts_max_len, self.settings.events_max_len, DEDUPE_TTL_MS],
        )
        self._last_epoch = str(epoch)
        # Waiters in this process need not wait for the watcher's round trip.
        self._signals.posts.fire()
        return {"seq": int(seq), **stored}

    async def _select(
        self, node_id: str, caps: Sequence[str], cursor: int, limit: int, now: float
    ) -> tuple[str, int, list[JSONObject]]:
        """The v1 selection rule, run as pages of :data:`scripts.PULL_PAGE`."""
        first = f"{min(max(cursor, 0), MAX_CURSOR) + 1}-0"
        epoch: str | None = None
        for _attempt in range(MAX_EPOCH_RESTARTS):
            start, highest = first, cursor
            posts: list[JSONObject] = []
            restarted = False
            while True:
                page_epoch, page_highest, next_start, state, picked = await self._script(
                    "pull", "PULL_PAGE", self._post_keys(),
                    [secrets.token_hex(16), start, _num(now), node_id, limit - len(posts),
                     self.scan_budget, *caps],
                )
                if epoch is None:
                    epoch = str(page_epoch)
                elif page_epoch != epoch:
                    # The data was lost between two pages: select again in the new epoch.
                    epoch, restarted = str(page_epoch), True
                    break
                if page_highest:
                    highest = max(highest, int(page_highest))
                for i in range(0, len(picked), 2):
                    posts.append({"seq": int(picked[i]), **json.loads(picked[i + 1])})
                if state != "more":
                    break
                start = str(next_start)
            if not restarted:
                self._last_epoch = epoch
                return epoch, highest, posts
        raise RelayUnavailable("redis data keeps disappearing (epoch changed during a pull)")

    async def pull(
        self,
        node_id: str,
        capabilities: Sequence[str],
        cursor: int,
        limit: int,
        wait: float,
        now: float,
    ) -> PullResult:
        caps = sorted(set(capabilities))
        first_epoch: str | None = None
        given_cursor = cursor

        async def look(elapsed: float) -> PullResult:
            nonlocal cursor, first_epoch
            epoch, cursor, posts = await self._select(node_id, caps, cursor, limit, now + elapsed)
            if first_epoch is None:
                first_epoch = epoch
            elif epoch != first_epoch:
                # Data lost while we waited: look again from the caller's cursor, in the
                # new epoch (``done`` then answers at once).
                epoch, cursor, posts = await self._select(
                    node_id, caps, given_cursor, limit, now + elapsed
                )
            # The advanced cursor: posts examined once are not examined again on wake-up.
            return PullResult(cursor=cursor, posts=posts, epoch=epoch)

        return await long_poll(
            self._signals.posts, wait, look,
            lambda result: bool(result.posts) or result.epoch != first_epoch,
            recheck_seconds=self.settings.recheck_seconds,
        )

    async def count_posts(self, now: float) -> int:
        expiry = self.keys.post_expiry
        return int(await self._conn.run(
            "count posts", lambda client: client.zcount(expiry, f"({_num(now)}", "+inf")
        ))

    async def purge_expired(self, now: float) -> int:
        """Remove expired posts and mailbox messages past retention; return posts removed."""
        k = self.keys
        removed = 0
        while True:
            batch = int(await self._script(
                "purge", "PURGE_POSTS", [k.posts, k.post_bodies, k.post_expiry],
                [_num(now), PURGE_BATCH],
            ))
            removed += batch
            if batch < PURGE_BATCH:
                break
        horizon_ms = int((now - self.settings.mailbox_retention_seconds) * 1000)
        while True:
            boxes = int(await self._script(
                "purge", "PURGE_MAILBOXES", [k.mailbox_index],
                [k.prefix, max(horizon_ms, 0), PURGE_BATCH],
            ))
            if boxes < PURGE_BATCH:
                break
        return removed

    # ----------------------------------------------------------------- mailboxes

    async def mailbox_send(
        self, to_node: str, sender: str, sender_verified: bool, request_id: str, payload: str,
        now: float,
    ) -> MailboxMessage:
        k = self.keys
        token = secrets.token_hex(16)
        now_ms = max(int(now * 1000), 0)
        horizon_ms = max(int((now - self.settings.mailbox_retention_seconds) * 1000), 0)
        message_id = await self._script(
            "mailbox send", "MAILBOX_SEND",
            [k.mailbox(to_node), k.mailbox_index, k.events, k.mailbox_dedupe(token)],
            [to_node, sender, "1" if sender_verified else "0", request_id, payload, _num(now),
             now_ms, self.settings.mailbox_max_len, self.settings.events_max_len,
             DEDUPE_TTL_MS, horizon_ms],
        )
        if message_id is None:
            raise HTTPProblem(
                429,
                f"the recipient's mailbox is full ({self.settings.mailbox_max_len} unacked "
                f"messages); retry later",
                reason="mailbox_full",
            )
        self._signals.fire_mailbox(to_node)
        return MailboxMessage(
            id=str(message_id), to=to_node, sender=sender, sender_verified=sender_verified,
            request_id=request_id, payload=payload, created_at=now,
        )

    async def _read_mailbox(self, node_id: str, limit: int) -> list[MailboxMessage]:
        key = self.keys.mailbox(node_id)

        async def read(client: Redis) -> list[tuple[str, dict[str, str]]]:
            entries = await client.xrange(key, "-", "+", count=max(limit, 1))
            return [
                (str(entry_id), {str(k): str(v) for k, v in (fields or {}).items()})
                for entry_id, fields in entries or []
            ]

        entries = await self._conn.run("mailbox pull", read)
        return [
            MailboxMessage(
                id=str(entry_id), to=node_id, sender=fields.get("f", ""),
                sender_verified=fields.get("v") == "1", request_id=fields.get("q", ""),
                payload=fields.get("p", ""), created_at=float(fields.get("c", 0.0)),
            )
            for entry_id, fields in entries
        ]

    async def mailbox_pull(self, node_id: str, limit: int, wait: float) -> list[MailboxMessage]:
        with self._signals.mailbox(node_id) as signal:
            return await long_poll(
                signal, wait, lambda _elapsed: self._read_mailbox(node_id, limit), bool,
                recheck_seconds=self.settings.recheck_seconds,
            )

    async def mailbox_ack(self, node_id: str, ids: Sequence[str]) -> int:
        # Ids this backend never issues cannot name a message; Redis would reject them.
        valid = [i for i in dict.fromkeys(ids) if isinstance(i, str) and _valid_message_id(i)]
        if not valid:
            return 0
        k = self.keys
        return int(await self._script(
            "mailbox ack", "MAILBOX_ACK", [k.mailbox(node_id), k.mailbox_index],
            [node_id, *valid],
        ))

    # ------------------------------------------------------------------- replays

    async def remember_once(self, key: str, ttl: float) -> bool:
        name = self.keys.once(key)
        ttl_ms = max(int(ttl * 1000), 1)
        result = await self._conn.run(
            "remember once", lambda client: client.set(name, "1", nx=True, px=ttl_ms)
        )
        return bool(result)
