"""``make_host``: a fresh, unstarted node host for tests.

Every call builds a new plugin manager holding only the core built-ins a node needs in
a test (the in-memory store and the HTTP transport) plus the temporary plugin objects
given, so nothing leaks between tests and nothing needs unregistering::

    class FakeSkillPlugin:
        __name__ = "fake-skill"

        @hookimpl
        def darkmesh_register_skills(self):
            yield SkillSpec(name="fake", factory=FakeSkill)

    host = make_host(FakeSkillPlugin(), node_id="node_a")
    app = create_node_app(host)
    await host.start()   # ASGITransport sends no lifespan events

or, with the host stopped however the block ends, ``async with running_node_app(host) as
app:``.

The process environment does not leak in through the plugin switches
(``DARKMESH_LOAD_PLUGINS`` / ``DARKMESH_DISABLE_PLUGINS`` are ignored here); node
settings still read ``DARKMESH_*`` variables unless given explicitly.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from sdl_core.host import Host
from sdl_core.node_app import create_node_app
from sdl_core.plugins import make_plugin_manager
from sdl_core.settings import NodeSettings, load_settings

#: Built-in entry points a test node loads: an in-memory store and the HTTP transport.
TEST_BUILTINS: frozenset[str] = frozenset({"darkmesh-sdl.memory-store", "darkmesh-sdl.http"})

#: Shared keys of a test node (hmac mode), so tests can call its routes.
TEST_NODE_KEY = "test-node-key-0123456789"
TEST_PEER_KEY = "test-peer-key-0123456789"


def node_overrides(node_id: str = "test-node", **extra: Any) -> dict[str, Any]:
    """The settings ``make_host`` uses unless told otherwise."""
    values: dict[str, Any] = {
        "node_id": node_id,
        "store": "memory",
        "auth_mode": "hmac",
        "node_key": TEST_NODE_KEY,
        "peer_key": TEST_PEER_KEY,
        "listener": False,
    }
    values.update(extra)
    return values


def make_host(
    *plugins: object,
    settings: NodeSettings | None = None,
    builtins: Iterable[str] = TEST_BUILTINS,
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    transport_override: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> Host:
    """A fresh, unstarted :class:`~sdl_core.Host`.

    :param plugins: temporary plugin objects (classes or instances with hookimpls and a
        readable ``__name__``), registered after the built-ins.
    :param settings: complete node settings; when given, ``overrides`` must be empty.
    :param builtins: core entry-point names to load (default: memory store, HTTP).
    :param tables: settings-file tables (``{"warm_intro": {...}}``) for plugin settings.
    :param transport_override: an outbound transport object used instead of the
        ``transport`` setting's plugin (``httpx.MockTransport``, the in-process mesh).
    :param overrides: node settings fields; defaults from :func:`node_overrides`
        (memory store, hmac mode with test keys, no listener) and a temporary
        ``data_dir`` removed when the host is garbage-collected.
    """
    if settings is not None and overrides:
        raise TypeError("make_host: pass either settings= or field overrides, not both")
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if settings is None:
        values = node_overrides(**overrides)
        if "data_dir" not in values:
            scratch = tempfile.TemporaryDirectory(prefix="darkmesh-test-")
            values["data_dir"] = scratch.name
        settings = load_settings(NodeSettings, tables or {}, overrides=values)
    pm = make_plugin_manager(only=set(builtins), plugins=plugins, environ={})
    host = Host(pm, settings, tables or {}, transport=transport_override)
    # Keeps the scratch directory alive exactly as long as the host.
    host._testing_scratch = scratch  # type: ignore[attr-defined]
    return host


@asynccontextmanager
async def running_node_app(host: Host) -> AsyncIterator[Starlette]:
    """``host``'s node app for the block, the host started (``ASGITransport`` sends no
    lifespan events) and stopped after the block, however it ends."""
    app = create_node_app(host)
    await host.start()
    try:
        yield app
    finally:
        await host.stop()
