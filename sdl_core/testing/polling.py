"""``until``: poll a condition in end-to-end tests, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["until"]


def until(probe: Callable[[], T | None], what: str = "condition", *, timeout: float = 20.0,
          interval: float = 0.05) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something truthy, and
    return that; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)
