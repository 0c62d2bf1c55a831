"""Phase 1: the live store. Reads come from Neotoma at request time through a short TTL
cache; writes (ingest) go to the fallback store; when Neotoma is unreachable reads come
from the fallback too, which is logged, shown in status, and undone as soon as Neotoma
answers again.

Datasets: ``contacts`` (mapped, §3.1–3.2), ``interactions`` (derived from the same
contacts: ``{email, strength}``), and any other dataset served from the schema-less
entity type of the same name, else from the fallback when Neotoma holds none (§3.7).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from darkmesh_neotoma.client import NeotomaError, NeotomaUnavailable
from darkmesh_neotoma.mapping import dataset_record, map_entities
from darkmesh_neotoma.runtime import NeotomaRuntime, runtime_for
from darkmesh_neotoma.settings import NeotomaSettings
from sdl_core import Host, JSONObject, Store, UnknownPluginError

log = logging.getLogger("darkmesh.neotoma")

CONTACT_DATASETS = ("contacts", "interactions")


@dataclass(kw_only=True)
class Snapshot:
    """One read of Neotoma for a group of datasets."""

    fetched_at: float
    records: dict[str, list[JSONObject]]  # dataset → records; empty dict = none in Neotoma
    marker: str


def build_fallback(host: Host, name: str) -> Store:
    """The fallback store, built through the host like any store (``vault``, ``memory``)."""
    for spec in host.hooks.stores():
        if spec.name == name:
            if name == "neotoma":
                break
            return host.build(spec, "darkmesh_register_stores")  # type: ignore[no-any-return]
    choices = sorted(s.name for s in host.hooks.stores() if s.name != "neotoma")
    raise UnknownPluginError("fallback store", name, choices, "DARKMESH_NEOTOMA_FALLBACK_STORE")


def _marker(records: dict[str, list[JSONObject]]) -> str:
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


class NeotomaStore:
    """A read-mostly :class:`sdl_core.Store` over Neotoma."""

    name = "neotoma"

    def __init__(self, host: Host, settings: NeotomaSettings) -> None:
        self.host = host
        self.settings = settings
        self.runtime: NeotomaRuntime = runtime_for(host)
        self.runtime.store_status = self.status
        self.fallback: Store = build_fallback(host, settings.fallback_store)
        self.mode = "live"
        self.last_error: str | None = None
        self.last_failure_at: float = 0.0
        self.last_success_at: float | None = None
        self.fallback_reads = 0
        self.neotoma_reads = 0
        self._cache: dict[str, Snapshot] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ writes

    async def upsert(self, dataset: str, records: Sequence[JSONObject]) -> int:
        return await self.fallback.upsert(dataset, records)

    async def replace(self, dataset: str, records: Sequence[JSONObject]) -> int:
        return await self.fallback.replace(dataset, records)

    async def delete(self, dataset: str, keys: Iterable[str]) -> int:
        return await self.fallback.delete(dataset, keys)

    # ------------------------------------------------------------------- reads

    @staticmethod
    def _group(dataset: str) -> str:
        return "contacts" if dataset in CONTACT_DATASETS else dataset

    def _lock(self, group: str) -> asyncio.Lock:
        lock = self._locks.get(group)
        if lock is None:
            lock = self._locks[group] = asyncio.Lock()
        return lock

    async def _fetch(self, group: str) -> Snapshot:
        listing = await self.runtime.client.list_entities(
            self.settings.entity_type if group == "contacts" else group
        )
        now = time.time()
        if group == "contacts":
            contacts, _ = map_entities(listing.entities, now=now,
                                       self_identifiers=self.host.settings.self_identifiers)
            records: dict[str, list[JSONObject]] = {
                "contacts": [c.contact() for c in contacts],
                "interactions": [i for c in contacts if (i := c.interaction()) is not None],
            }
        else:
            rows = [r for e in listing.entities if (r := dataset_record(e)) is not None]
            records = {group: rows} if rows else {}
        return Snapshot(fetched_at=now, records=records, marker=_marker(records))

    async def snapshot(self, dataset: str) -> Snapshot | None:
        """The live records of ``dataset``'s group, or None when the fallback serves."""
        group = self._group(dataset)
        ttl = self.settings.cache_ttl_seconds
        cached = self._cache.get(group)
        if cached is not None and ttl > 0 and time.time() - cached.fetched_at < ttl:
            return cached
        if (self.mode == "fallback"
                and time.time() - self.last_failure_at < self.settings.retry_after_seconds):
            return None  # do not make every read wait for a Neotoma that just failed
        async with self._lock(group):
            cached = self._cache.get(group)
            if cached is not None and ttl > 0 and time.time() - cached.fetched_at < ttl:
                return cached  # another reader refreshed it while we waited
            try:
                fresh = await self._fetch(group)
            except (NeotomaUnavailable, NeotomaError) as exc:
                self._enter_fallback(exc)
                return None
            self._cache[group] = fresh
            if self.mode == "fallback":
                log.warning("darkmesh-neotoma: Neotoma is reachable again at %s; contacts are "
                            "served live from Neotoma", self.settings.url)
            self.mode = "live"
            self.last_error = None
            self.last_success_at = fresh.fetched_at
            return fresh

    def _enter_fallback(self, exc: Exception) -> None:
        self.last_failure_at = time.time()
        self.last_error = str(exc)
        self._cache.clear()
        if self.mode != "fallback":
            log.warning("darkmesh-neotoma: Neotoma unreachable at %s (%s); serving contacts "
                        "from the fallback store %r until it answers again", self.settings.url,
                        exc, self.settings.fallback_store)
        self.mode = "fallback"

    async def records(self, dataset: str) -> tuple[str, list[JSONObject]]:
        """(source, records): source is ``neotoma`` or the fallback's name."""
        snap = await self.snapshot(dataset)
        if snap is not None and dataset in snap.records:
            self.neotoma_reads += 1
            return "neotoma", [dict(r) for r in snap.records[dataset]]
        self.fallback_reads += 1
        return self.settings.fallback_store, [r async for r in self.fallback.iterate(dataset)]

    async def iterate(self, dataset: str) -> AsyncIterator[JSONObject]:
        _, rows = await self.records(dataset)
        for row in rows:
            yield row

    async def count(self, dataset: str) -> int:
        _, rows = await self.records(dataset)
        return len(rows)

    async def changed_marker(self, dataset: str) -> str:
        snap = await self.snapshot(dataset)
        if snap is not None and dataset in snap.records:
            return f"neotoma:{snap.marker}"
        return f"{self.settings.fallback_store}:{await self.fallback.changed_marker(dataset)}"

    def invalidate(self) -> None:
        """Drop the cache (the next read goes to Neotoma)."""
        self._cache.clear()

    async def close(self) -> None:
        await self.fallback.close()
        await self.runtime.shutdown()

    def status(self) -> JSONObject:
        cached = self._cache.get("contacts")
        probe = self.runtime.probe_result
        return {
            "store": self.name,
            "mode": self.mode,
            "neotoma_url": self.settings.url,
            "fallback_store": self.settings.fallback_store,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
            "cache_ttl_seconds": self.settings.cache_ttl_seconds,
            "cached_contacts": len(cached.records.get("contacts", [])) if cached else None,
            "admission": probe.outcome if probe else None,
            "outbox_depth": self.runtime.writeback.status()["outbox_depth"],
            "reads": {"neotoma": self.neotoma_reads, "fallback": self.fallback_reads},
        }

