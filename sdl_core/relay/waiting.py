"""What relay backends share: change notification and the long-poll loop, ids.

A long-poll must not miss a publish that lands between "look at the store" and "start
waiting". A version counter solves that: read ``version`` *before* looking, then
``wait_changed(version, timeout)`` returns at once if anything changed in between.
:class:`ChangeNotifier` is that counter for one process; :func:`long_poll` is the loop
every backend's ``pull`` and ``mailbox_pull`` runs on top of one.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")

#: Unacked mailbox messages older than this are dropped by ``purge_expired``, so a
#: mailbox whose owner never returns cannot grow without bound.
MAILBOX_RETENTION_SECONDS = 24 * 3600.0


class Versioned(Protocol):
    """What :func:`long_poll` waits on: a version bumped on every change."""

    @property
    def version(self) -> int: ...

    async def wait_changed(self, since: int, timeout: float) -> bool: ...


class ChangeNotifier:
    """A monotonically increasing version plus an asyncio condition to wait on it."""

    def __init__(self) -> None:
        self.version = 0
        self._condition: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        # Created lazily so the notifier binds to the loop that first uses it.
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def notify(self) -> None:
        """Bump the version and wake every waiter."""
        cond = self._cond()
        async with cond:
            self.version += 1
            cond.notify_all()

    async def wait_changed(self, since: int, timeout: float) -> bool:
        """Wait until ``version`` differs from ``since`` or ``timeout`` passes.

        :returns: True when the version changed.
        """
        if self.version != since:
            return True
        if timeout <= 0:
            return False
        cond = self._cond()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the wake-up, leaving a cancelled long-poll running forever.
            async with asyncio.timeout(timeout), cond:
                await cond.wait_for(lambda: self.version != since)
        except TimeoutError:
            return self.version != since
        return True


class Deadline:
    """Remaining time of one long-poll, measured on the monotonic clock.

    Part of the public API for relay-backend authors: ``remaining()`` bounds each wait,
    ``elapsed()`` advances the ``now`` a backend judges expiry by.
    """

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + max(0.0, seconds)
        self._start = time.monotonic()

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self._start


async def long_poll(
    changes: Versioned,
    wait: float,
    look: Callable[[float], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    recheck_seconds: float = math.inf,
) -> T:
    """Call ``look(elapsed)`` until ``done(result)`` or ``wait`` seconds have passed.

    Part of the public API for relay-backend authors. ``elapsed`` is the time since the
    long-poll began, for advancing the ``now`` a backend judges expiry by. The version of
    ``changes`` is read before each look, so a change landing between the look and the
    wait ends that wait at once. ``recheck_seconds`` bounds each wait, for changes this
    process is not told about (another relay process writing the same database).

    :returns: the last look's result: the one ``done`` accepted, or the one at the deadline.
    """
    deadline = Deadline(wait)
    while True:
        version = changes.version
        result = await look(deadline.elapsed())
        if done(result) or deadline.remaining() <= 0:
            return result
        await changes.wait_changed(version, min(deadline.remaining(), recheck_seconds))


def new_post_id() -> str:
    """12 lowercase hex characters, as upstream."""
    return secrets.token_hex(6)


def new_epoch() -> str:
    """A fresh epoch: random, so two relays' data sets never share one by accident."""
    return secrets.token_hex(16)


def new_message_id() -> str:
    return secrets.token_hex(16)


def selects(
    post_template: str, requester_id: str, node_id: str, capabilities: frozenset[str]
) -> bool:
    """The v1 filter: not the puller's own post, and a template it asked for."""
    return requester_id != node_id and post_template in capabilities
