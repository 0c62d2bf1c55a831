"""Cross-process wake-ups for long-polls.

Every publish and mailbox send appends a tiny entry to one ``events`` stream (inside the
same script as the write). Each relay process runs one :class:`EventWatcher` that
blocks on that stream with ``XREAD BLOCK`` and fires in-process :class:`Signal`\\ s, so a
long-poll waiting in relay 2 wakes when relay 1 publishes, with one Redis connection
per process rather than one per waiting request.

A waiter never misses a wake-up: it reads the signal's ``version`` *before* looking at
Redis, and the watcher reads the stream from the last id it saw, never from "now". When
the watcher loses Redis it fires every signal, so waiters look again at once and report
the failure themselves instead of sleeping through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from darkmesh_redis.connection import TRANSIENT_ERRORS

log = logging.getLogger("darkmesh.redis")

#: Longest single XREAD BLOCK; a flushed (restarted) stream is noticed within this.
BLOCK_SLICE_SECONDS = 5.0
#: Pause between reconnect attempts of the watcher, doubled up to the cap.
RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS = 0.05, 1.0
#: What makes the watcher reconnect rather than die.
WATCHER_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, redis_errors.RedisError)
#: How long ``stop`` waits for the task before cancelling it.
STOP_GRACE_SECONDS = 1.0


class Signal:
    """A version counter to wait on: ``fire`` bumps it and wakes every waiter.

    It satisfies :class:`sdl_core.relay.waiting.Versioned`, so backends long-poll on it
    with :func:`sdl_core.long_poll`. Unlike the core's ``ChangeNotifier`` it is fired
    synchronously, from the event watcher's task.
    """

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def fire(self) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_changed(self, since: int, timeout: float) -> bool:
        """Wait until the version differs from ``since`` or ``timeout`` passes.

        :returns: True when it changed.
        """
        if self.version != since:
            return True
        if timeout > 0:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the wake-up (the core's ChangeNotifier avoids it the same way).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event.wait()
        return self.version != since


class Signals:
    """The posts signal plus one signal per mailbox that somebody is waiting on."""

    def __init__(self) -> None:
        self.posts = Signal()
        self._mailboxes: dict[str, tuple[Signal, int]] = {}

    @contextlib.contextmanager
    def mailbox(self, node_id: str) -> Iterator[Signal]:
        """The signal of ``node_id``'s mailbox while the caller waits (then dropped)."""
        signal, waiters = self._mailboxes.get(node_id, (Signal(), 0))
        self._mailboxes[node_id] = (signal, waiters + 1)
        try:
            yield signal
        finally:
            signal, waiters = self._mailboxes[node_id]
            if waiters <= 1:
                del self._mailboxes[node_id]
            else:
                self._mailboxes[node_id] = (signal, waiters - 1)

    def fire_mailbox(self, node_id: str) -> None:
        entry = self._mailboxes.get(node_id)
        if entry is not None:
            entry[0].fire()

    def fire_all(self) -> None:
        self.posts.fire()
        for signal, _ in list(self._mailboxes.values()):
            signal.fire()


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class EventWatcher:
    """One background task per relay process: ``XREAD BLOCK`` on the events stream."""

    def __init__(self, client: Redis, stream: str, signals: Signals) -> None:
        self._client = client
        self._stream = stream
        self._signals = signals
        self._task: asyncio.Task[None] | None = None
        self.healthy = False
        self.last_error = ""
        self._stopping = False
        self._client_id: int | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="darkmesh-redis-watcher")

    async def stop(self, unblocker: Redis) -> None:
        """End the task. ``unblocker`` (another client) ends a pending XREAD BLOCK with
        ``CLIENT UNBLOCK``: redis-py holds a cancelled blocking read until it returns."""
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            # Repeated: an UNBLOCK sent just before the XREAD reaches Redis is a no-op.
            deadline = asyncio.get_running_loop().time() + STOP_GRACE_SECONDS
            while not task.done() and asyncio.get_running_loop().time() < deadline:
                if self._client_id is not None:
                    with contextlib.suppress(*WATCHER_ERRORS):
                        await asyncio.wait_for(unblocker.client_unblock(self._client_id),
                                               STOP_GRACE_SECONDS)
                await asyncio.wait({task}, timeout=0.05)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *WATCHER_ERRORS):
                await task
        await self._client.aclose(close_connection_pool=True)

    async def _latest_id(self) -> str:
        top = await self._client.xrevrange(self._stream, count=1)
        return str(top[0][0]) if top else "0-0"

    async def _run(self) -> None:
        pause = RECONNECT_MIN_SECONDS
        last: str | None = None
        block_ms = int(BLOCK_SLICE_SECONDS * 1000)
        while not self._stopping:
            try:
                if last is None:
                    # The pool holds one connection, so this id is the one XREAD blocks on.
                    self._client_id = int(await self._client.client_id())
                    last = await self._latest_id()
                    if not self.healthy:
                        # Anything may have happened while we were blind.
                        self.healthy = True
                        self.last_error = ""
                        self._signals.fire_all()
                    pause = RECONNECT_MIN_SECONDS
                reply = await self._client.xread({self._stream: last}, count=1000, block=block_ms)
                if self._stopping:
                    return
                if not reply:
                    # After a flush the stream starts again below our last id; follow it.
                    latest = await self._latest_id()
                    if _id_tuple(latest) < _id_tuple(last):
                        last = latest
                        self._signals.fire_all()
                    continue
                last = self._dispatch_reply(reply, last)
            except asyncio.CancelledError:
                raise
            except WATCHER_ERRORS as exc:
                if self._stopping:
                    return
                if self.healthy:
                    log.warning("darkmesh-redis: lost the events stream: %s", exc)
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                last = None
                self._signals.fire_all()
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)

    def _dispatch_reply(self, reply: Any, last: str) -> str:
        """Fire the signals an XREAD reply asks for; return the last id read."""
        for _stream, entries in reply:
            for entry_id, fields in entries:
                last = str(entry_id)
                self._dispatch(dict(fields))
        return last

    def _dispatch(self, fields: dict[str, str]) -> None:
        kind = fields.get("k")
        if kind == "p":
            self._signals.posts.fire()
        elif kind == "m":
            self._signals.fire_mailbox(fields.get("n", ""))
