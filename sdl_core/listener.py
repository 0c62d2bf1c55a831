"""The listener: background tasks in the node process that keep it on the relay.

Three tasks, all started by :meth:`Listener.start`:

* **register**: registers the node (templates served, aliases skills asked for) at
  start and every :data:`REGISTER_INTERVAL_SECONDS`, so the relay counts it as live;
* **posts**: long-polls ``posts/pull`` (``listener_wait_seconds``) and hands each post
  to every skill whose :class:`~sdl_core.SkillSpec` lists the post's template. After
  each batch it persists ``{cursor, epoch}`` in ``host.state("listener")``; a new epoch
  means the relay lost its data, so the cursor restarts at 0 (a relay restart never
  blinds the node). A reply without an epoch is an upstream relay: poll every second;
* **mailbox**: long-polls ``mailbox/pull`` and offers each message to the skills in
  order until one returns True, then acks it. Messages nobody handles are logged and
  acked too, or they would be redelivered forever.

Errors never end a task: a failing skill is logged; a failing relay call backs off
exponentially (capped, with jitter) and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sdl_core.protocols import JSONObject, MailboxMessage
from sdl_core.relay.client import RelayError

if TYPE_CHECKING:
    from sdl_core.host import Host
    from sdl_core.relay.client import RelayClient

log = logging.getLogger("darkmesh.listener")

REGISTER_INTERVAL_SECONDS = 20.0
#: Poll interval against an upstream relay (no long-poll, no epoch), as upstream pollers.
UPSTREAM_POLL_SECONDS = 1.0
PULL_LIMIT = 20
MAILBOX_LIMIT = 50
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
#: An upstream relay has no mailboxes (404); look again this rarely.
MAILBOX_UNSUPPORTED_RETRY_SECONDS = 60.0
STATE_KEY = "position"


class Backoff:
    """Capped exponential backoff with full jitter in [delay/2, delay]."""

    def __init__(self, initial: float = BACKOFF_INITIAL_SECONDS,
                 maximum: float = BACKOFF_MAX_SECONDS) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * (2 ** self.failures))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


class Listener:
    """Keeps one node registered on its relay and feeds posts and mail to its skills."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._aliases: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._register_lock = asyncio.Lock()
        self._reregister = asyncio.Event()
        self._stats: dict[str, Any] = {
            "posts_dispatched": 0, "mailbox_handled": 0, "mailbox_unhandled": 0,
            "pulls": 0, "epoch_resets": 0,
        }
        self._cursor = 0
        self._epoch: str | None = None
        self._saved: tuple[int, str | None] = (0, None)
        self._upstream = False
        self._mailbox_supported: bool | None = None
        self._registered_at: float | None = None
        self._last_pull_at: float | None = None
        self._last_error: str | None = None
        self.backoff = Backoff()

    # -------------------------------------------------------------------- public

    @property
    def relay(self) -> RelayClient:
        if self.host.relay is None:
            raise RuntimeError("the listener needs a relay client (DARKMESH_RELAY_URL)")
        return self.host.relay

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    @property
    def aliases(self) -> list[str]:
        return list(self._aliases)

    async def start(self) -> None:
        """Load the saved position and start the tasks (returns at once)."""
        if self.running:
            return
        saved = await asyncio.to_thread(self._load_position)
        self._cursor, self._epoch = saved
        self._saved = saved
        self._tasks = [
            asyncio.create_task(self._register_loop(), name="listener-register"),
            asyncio.create_task(self._posts_loop(), name="listener-posts"),
            asyncio.create_task(self._mailbox_loop(), name="listener-mailbox"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def set_aliases(self, aliases: Iterable[str]) -> None:
        """Make ``aliases`` the node's whole alias set; re-registers when running.

        :raises RelayError: when running and the relay refuses the registration (e.g.
            409: an alias belongs to another node).
        """
        self._aliases = list(dict.fromkeys(a for a in aliases if a))
        if self.running:
            await self.register()

    async def add_aliases(self, *aliases: str) -> None:
        await self.set_aliases([*self._aliases, *aliases])

    async def remove_aliases(self, *aliases: str) -> None:
        gone = set(aliases)
        await self.set_aliases([a for a in self._aliases if a not in gone])

    async def register(self) -> JSONObject:
        """Register now (templates served and current aliases)."""
        async with self._register_lock:
            answer = await self.relay.register(self.host.templates(), self._aliases)
            self._registered_at = time.time()
            return answer

    def status(self) -> JSONObject:
        return {
            "running": self.running,
            "relay_url": self.relay.url if self.host.relay is not None else "",
            "cursor": self._cursor,
            "epoch": self._epoch,
            "upstream_relay": self._upstream,
            "mailbox_supported": self._mailbox_supported,
            "registered_at": self._registered_at,
            "last_pull_at": self._last_pull_at,
            "last_error": self._last_error,
            "aliases": len(self._aliases),
            **self._stats,
        }

    # --------------------------------------------------------------- persistence

    def _load_position(self) -> tuple[int, str | None]:
        saved = self.host.state("listener").get(STATE_KEY) or {}
        cursor = saved.get("cursor") if isinstance(saved, dict) else None
        epoch = saved.get("epoch") if isinstance(saved, dict) else None
        valid_cursor = cursor if isinstance(cursor, int) and cursor >= 0 else 0
        return valid_cursor, epoch if isinstance(epoch, str) else None

    async def _save_position(self) -> None:
        value = {"cursor": self._cursor, "epoch": self._epoch}
        await asyncio.to_thread(self.host.state("listener").put, STATE_KEY, value)
        self._saved = (self._cursor, self._epoch)

    # --------------------------------------------------------------------- tasks

    def _failed(self, what: str, exc: BaseException, backoff: Backoff) -> float:
        self._last_error = f"{what}: {exc}"
        delay = backoff.next_delay()
        log.warning("listener %s failed (%s); retrying in %.1fs", what, exc, delay)
        return delay

    async def _register_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.register()
            except RelayError as exc:
                await asyncio.sleep(self._failed("register", exc, backoff))
                continue
            backoff.reset()
            await asyncio.sleep(REGISTER_INTERVAL_SECONDS)

    async def _posts_loop(self) -> None:
        wait = float(self.host.settings.listener_wait_seconds)
        while True:
            try:
                reply = await self.relay.pull(
                    self._cursor, limit=PULL_LIMIT, wait=0 if self._upstream else wait
                )
            except RelayError as exc:
                await asyncio.sleep(self._failed("pull", exc, self.backoff))
                continue
            self.backoff.reset()
            self._stats["pulls"] += 1
            self._last_pull_at = time.time()
            try:
                if await self._handle_pull(reply):
                    continue  # the epoch changed: pull again from 0 at once
            except Exception as exc:  # e.g. the node database; never end the task
                log.exception("listener failed handling a pull")
                await asyncio.sleep(self._failed("pull handling", exc, self.backoff))
                continue
            if self._upstream or wait <= 0:
                await asyncio.sleep(UPSTREAM_POLL_SECONDS)

    async def _handle_pull(self, reply: JSONObject) -> bool:
        """Dispatch one pull's posts; True when the epoch changed and we must re-pull."""
        epoch = reply.get("epoch")
        self._upstream = epoch is None
        if epoch is not None and epoch != self._epoch:
            if self._cursor != 0:
                log.warning("relay epoch changed (%s -> %s): its data was reset; restarting "
                            "from cursor 0", self._epoch, epoch)
                self._stats["epoch_resets"] += 1
                self._cursor, self._epoch = 0, epoch
                await self._save_position()
                return True
            self._epoch = epoch
        for post in reply.get("posts", []):
            await self._dispatch_post(post)
        self._cursor = max(self._cursor, int(reply.get("cursor", self._cursor)))
        if (self._cursor, self._epoch) != self._saved:
            await self._save_position()
        return False

    async def _dispatch_post(self, post: JSONObject) -> None:
        template = post.get("template")
        for name, skill in list(self.host.skills.items()):
            spec = self.host.skill_specs.get(name)
            if spec is None or template not in spec.templates:
                continue
            try:
                await skill.handle_post(post)
                self._stats["posts_dispatched"] += 1
            except Exception:  # a skill must never stop the listener
                log.exception("skill %s failed on post %s", name, post.get("post_id"))

    async def _mailbox_loop(self) -> None:
        wait = float(self.host.settings.listener_wait_seconds)
        backoff = Backoff()
        while True:
            try:
                messages = await self.relay.mailbox_pull(wait=wait, limit=MAILBOX_LIMIT)
            except RelayError as exc:
                if exc.status in (404, 405):
                    # An upstream relay has no mailboxes; v1 does not need them.
                    self._mailbox_supported = False
                    await asyncio.sleep(MAILBOX_UNSUPPORTED_RETRY_SECONDS)
                    continue
                await asyncio.sleep(self._failed("mailbox pull", exc, backoff))
                continue
            backoff.reset()
            self._mailbox_supported = True
            if not messages:
                if wait <= 0:
                    await asyncio.sleep(UPSTREAM_POLL_SECONDS)
                continue
            for message in messages:
                await self._dispatch_message(message)
            try:
                # Handled or not, every message is acked: unhandled ones are logged.
                await self.relay.mailbox_ack([m.id for m in messages])
            except RelayError as exc:
                # Unacked messages come back on the next pull; skills see them again.
                await asyncio.sleep(self._failed("mailbox ack", exc, backoff))

    async def _dispatch_message(self, message: MailboxMessage) -> str | None:
        """Offer ``message`` to each skill in order until one returns True.

        :returns: the handling skill's name, or None when nobody handled it.
        """
        for name, skill in list(self.host.skills.items()):
            try:
                if await skill.handle_mailbox(message):
                    self._stats["mailbox_handled"] += 1
                    return name
            except Exception:
                log.exception("skill %s failed on mailbox message %s", name, message.id)
        self._stats["mailbox_unhandled"] += 1
        log.warning("no skill handled mailbox message %s (request %s from %s); acking it",
                    message.id, message.request_id, message.sender)
        return None


__all__: Sequence[str] = ["Backoff", "Listener"]
