"""Built-in store ``memory``: the vault's semantics in a dict, for tests and demos.

Nothing is persisted and nothing is encrypted. Records are copied in and out (through
their JSON encoding, exactly as the vault stores them), so callers never share
mutable state with the store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

from sdl_core.errors import DarkmeshError
from sdl_core.plugins import hookimpl
from sdl_core.protocols import JSONObject
from sdl_core.specs import StoreSpec
from sdl_core.vault.records import check_dataset, decode_record, encode_records


class MemoryStore:
    """An in-memory :class:`sdl_core.Store`: upsert by key, first-insert order."""

    name = "memory"

    def __init__(self) -> None:
        # Python dicts keep insertion order and keep a key's slot on reassignment,
        # which is exactly "replace by key, keep first-insert order".
        self._data: dict[str, dict[str, bytes]] = {}
        self._generation: dict[str, int] = {}
        self._epoch = uuid.uuid4().hex
        self._lock = asyncio.Lock()
        self._closed = False

    def _ensure_open(self) -> None:
        if self._closed:
            raise DarkmeshError("memory store is closed")

    def _bump(self, dataset: str) -> None:
        self._generation[dataset] = self._generation.get(dataset, 0) + 1

    async def upsert(self, dataset: str, records: Sequence[JSONObject]) -> int:
        encoded = encode_records(dataset, records)
        async with self._lock:
            self._ensure_open()
            if not encoded:
                return len(self._data.get(dataset, {}))
            rows = self._data.setdefault(dataset, {})
            for key, raw in encoded:
                rows[key] = raw
            self._bump(dataset)
            return len(rows)

    async def replace(self, dataset: str, records: Sequence[JSONObject]) -> int:
        encoded = encode_records(dataset, records)
        async with self._lock:
            self._ensure_open()
            rows: dict[str, bytes] = {}
            for key, raw in encoded:
                rows[key] = raw
            self._data[dataset] = rows
            self._bump(dataset)
            return len(rows)

    async def delete(self, dataset: str, keys: Iterable[str]) -> int:
        check_dataset(dataset)
        async with self._lock:
            self._ensure_open()
            rows = self._data.get(dataset, {})
            removed = 0
            for key in dict.fromkeys(str(k) for k in keys):
                if rows.pop(key, None) is not None:
                    removed += 1
            if removed:
                self._bump(dataset)
            return removed

    async def iterate(self, dataset: str) -> AsyncIterator[JSONObject]:
        self._ensure_open()
        # A snapshot: writes during iteration do not disturb it, as with the vault's pages.
        for raw in list(self._data.get(dataset, {}).values()):
            yield decode_record(raw)

    async def count(self, dataset: str) -> int:
        self._ensure_open()
        return len(self._data.get(dataset, {}))

    async def changed_marker(self, dataset: str) -> str:
        self._ensure_open()
        return f"{self._epoch}:{self._generation.get(dataset, 0)}"

    def status(self) -> JSONObject:
        return {
            "store": self.name,
            "persistent": False,
            "datasets": {name: len(rows) for name, rows in sorted(self._data.items())},
        }

    async def close(self) -> None:
        self._closed = True


def _memory_store(host: Any, settings: Any) -> MemoryStore:
    return MemoryStore()


@hookimpl(trylast=True)
def darkmesh_register_stores() -> Iterator[StoreSpec]:
    yield StoreSpec(
        name="memory",
        factory=_memory_store,
        description="In-memory store for tests and demos (not persisted, not encrypted)",
    )
