"""``long_poll``: the loop every relay backend's ``pull`` and ``mailbox_pull`` runs on."""

from __future__ import annotations

import asyncio
import time

import pytest

from sdl_core import long_poll
from sdl_core.relay.waiting import ChangeNotifier


@pytest.mark.asyncio
async def test_a_change_between_look_and_wait_is_not_missed() -> None:
    changes = ChangeNotifier()
    items: list[str] = []

    async def look(elapsed: float) -> list[str]:
        if not items and changes.version == 0:
            # Lands after the version was read and before the wait: must wake it at once.
            items.append("late")
            await changes.notify()
            return []
        return list(items)

    started = time.monotonic()
    assert await long_poll(changes, 20, look, bool) == ["late"]
    assert time.monotonic() - started < 5  # not the 20 s wait


@pytest.mark.asyncio
async def test_it_returns_the_last_look_at_the_deadline_and_passes_elapsed() -> None:
    changes = ChangeNotifier()
    seen: list[float] = []

    async def look(elapsed: float) -> int:
        seen.append(elapsed)
        return len(seen)

    # Nothing is ever done; recheck_seconds makes it look again without a change.
    assert await long_poll(changes, 0.3, look, lambda n: False, recheck_seconds=0.05) >= 3
    assert seen == sorted(seen) and seen[0] < seen[-1] and seen[-1] >= 0.25
    assert await long_poll(changes, 0, look, lambda n: False) == len(seen)  # no wait: one look


@pytest.mark.asyncio
async def test_a_notify_wakes_a_parked_poll() -> None:
    changes = ChangeNotifier()
    box: list[str] = []

    async def publish_later() -> None:
        await asyncio.sleep(0.2)
        box.append("post")
        await changes.notify()

    task = asyncio.create_task(publish_later())
    started = time.monotonic()
    assert await long_poll(changes, 20, lambda _e: asyncio.sleep(0, list(box)), bool) == ["post"]
    assert time.monotonic() - started < 5
    await task
