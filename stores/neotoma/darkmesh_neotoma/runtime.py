"""Per-node shared state of the plugin: the client, the probe result, the writeback.

The store, the subscriber, the start-up hook and the CLI are built by different hooks;
they meet here, one :class:`NeotomaRuntime` per :class:`sdl_core.Host`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from darkmesh_neotoma.client import SIGNER_ROLE, NeotomaClient
from darkmesh_neotoma.probe import ProbeResult, log_outcome, probe
from darkmesh_neotoma.settings import NeotomaSettings
from darkmesh_neotoma.writeback import Outbox, Writeback
from sdl_core import Host

log = logging.getLogger("darkmesh.neotoma")

PLUGIN = "darkmesh-neotoma"
STATE_FEATURE = "neotoma"

_RUNTIMES: weakref.WeakKeyDictionary[Host, NeotomaRuntime] = weakref.WeakKeyDictionary()


def settings_for(host: Host) -> NeotomaSettings:
    return host.plugin_settings(NeotomaSettings, plugin=PLUGIN)  # type: ignore[no-any-return]


def runtime_for(host: Host) -> NeotomaRuntime:
    runtime = _RUNTIMES.get(host)
    if runtime is None:
        runtime = NeotomaRuntime(host, settings_for(host))
        _RUNTIMES[host] = runtime
    return runtime


class NeotomaRuntime:
    """What every piece of the plugin in one node shares."""

    def __init__(self, host: Host, settings: NeotomaSettings) -> None:
        self.host = host
        self.settings = settings
        self.probe_result: ProbeResult | None = None
        self._client: NeotomaClient | None = None
        self._writeback: Writeback | None = None
        self.store_status: Callable[[], dict[str, Any]] | None = None
        host.set_status("neotoma", self.status)

    @property
    def active(self) -> bool:
        """Used at all: the node's store is ``neotoma``, or a Neotoma URL is configured."""
        return self.host.settings.store == "neotoma" or "url" in self.settings.model_fields_set

    @property
    def client(self) -> NeotomaClient:
        # Built on first use: the store's factory runs before the host builds its signer.
        if self._client is None:
            self._client = NeotomaClient(self.settings, signer=self.host.signer)
        return self._client

    def signer_ready(self) -> bool:
        signer = self.host.signer
        return signer is not None and signer.has_role(SIGNER_ROLE)

    @property
    def writeback(self) -> Writeback:
        if self._writeback is None:
            enabled = self.settings.writeback and self.active and self.signer_ready()
            if not self.settings.writeback:
                log.info("darkmesh-neotoma: writeback is off (DARKMESH_NEOTOMA_WRITEBACK=false)")
            elif not self.active:
                log.info("darkmesh-neotoma: writeback is off: no Neotoma URL is configured "
                         "(set DARKMESH_NEOTOMA_URL)")
            elif not self.signer_ready():
                log.warning("darkmesh-neotoma: writeback is off: no signer is installed for "
                            "the node (install darkmesh-aauth and use auth_mode aauth or "
                            "either); reveals are not recorded in Neotoma")
            self._writeback = Writeback(
                client=self.client, outbox=Outbox(self.host.state(STATE_FEATURE)),
                enabled=enabled, budget_seconds=self.host.settings.event_budget_seconds,
                initial_backoff=self.settings.outbox_initial_backoff_seconds,
                max_backoff=self.settings.outbox_max_backoff_seconds,
            )
        return self._writeback

    async def run_probe(self) -> ProbeResult:
        self.probe_result = await probe(self.client)
        return self.probe_result

    async def startup(self) -> None:
        """Probe once (one log line), then resume any writeback left in the outbox."""
        if not self.active:
            return
        log_outcome(await self.run_probe())
        writeback = self.writeback
        if writeback.enabled and writeback.outbox.depth():
            writeback.ensure_worker()

    async def shutdown(self) -> None:
        if self._writeback is not None:
            await self._writeback.stop()
        if self._client is not None:
            await self._client.aclose()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.settings.url,
            "active": self.active,
            "read_auth": self.client.read_mode(),
            "admission": self.probe_result.to_json() if self.probe_result else None,
            "admission_message": self.probe_result.message() if self.probe_result else None,
            "writeback": self.writeback.status(),
        }
        if self.store_status is not None:
            out["store"] = self.store_status()
        return out


def existing_runtime(host: Host) -> NeotomaRuntime | None:
    """The runtime of ``host`` if any piece built one (shutdown must not create it)."""
    return _RUNTIMES.get(host)
