"""Fixtures of darkmesh-neotoma's tests: the Neotoma stand-in over real loopback HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from sdl_core import Host, SignerSpec, hookimpl
from sdl_core.testing.host import TEST_BUILTINS, make_host

# The stand-in and the test signer live beside the tests; importlib mode does not put
# this folder on sys.path by itself.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from neotoma_testsigner import TestSigner  # noqa: E402
from standin import StandinServer  # noqa: E402

STRICT_TOKEN = "strict-bearer-token-0123456789"


class FakeClock:
    """Real time plus an offset the test moves (signatures still use real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def standin(clock: FakeClock) -> Iterator[StandinServer]:
    with StandinServer(profile="dev", bearer_token="dev-token", clock=clock) as server:
        yield server


@pytest.fixture
def strict_standin(clock: FakeClock) -> Iterator[StandinServer]:
    with StandinServer(profile="strict", bearer_token=STRICT_TOKEN, clock=clock) as server:
        yield server


# ------------------------------------------------------------------ node hosts

# Prefer the real signer plugin (darkmesh-aauth); without it (tox env "neotoma": the core
# and this plugin alone), or with DARKMESH_TEST_NEOTOMA_SIGNER=test, the test signer
# stands in through the same sdl_core.Signer Protocol.
try:
    from darkmesh_aauth.keys import generate_jwk

    HAVE_AAUTH = os.environ.get("DARKMESH_TEST_NEOTOMA_SIGNER") != "test"
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_AAUTH = False


class TestSignerPlugin:
    """A temporary plugin registering :class:`TestSigner` as the node's signer."""

    __test__ = False
    __name__ = "neotoma-test-signer-plugin"

    def __init__(self, signer: TestSigner) -> None:
        self.signer = signer

    @hookimpl
    def darkmesh_register_signers(self) -> Any:
        yield SignerSpec(name="test-signer", factory=lambda host, settings: self.signer)


def node_host(
    data_dir: Path,
    neotoma_url: str,
    *,
    node_id: str = "node_b",
    store: str = "neotoma",
    signer: str | None = "aauth",
    fallback: str = "memory",
    node_jwk: dict[str, Any] | None = None,
    test_signer: TestSigner | None = None,
    neotoma: dict[str, Any] | None = None,
    **node: Any,
) -> Host:
    """An unstarted node host whose [neotoma] table points at ``neotoma_url``."""
    builtins = set(TEST_BUILTINS) | {"darkmesh-neotoma", "darkmesh-sdl.vault"}
    tables: dict[str, dict[str, Any]] = {
        "neotoma": {"url": neotoma_url, "fallback_store": fallback,
                    "outbox_initial_backoff_seconds": 0.2, **(neotoma or {})},
    }
    plugins: list[object] = []
    if signer == "aauth" and HAVE_AAUTH:
        builtins.add("darkmesh-aauth")
        tables["aauth"] = {"private_jwk": json.dumps(node_jwk or generate_jwk("Ed25519"))}
    elif signer is not None:
        plugins.append(TestSignerPlugin(test_signer or TestSigner(sub=f"darkmesh-node@{node_id}")))
    return make_host(*plugins, builtins=builtins, tables=tables, node_id=node_id, store=store,
                     auth_mode="either" if signer else "hmac", data_dir=str(data_dir), **node)


async def started(host: Host) -> Host:
    """``host`` prepared and started; the caller stops it."""
    host.prepare()
    await host.start()
    return host


@contextlib.asynccontextmanager
async def running(host: Host) -> AsyncIterator[Host]:
    """``host`` started for the block and stopped after it, however the block ends."""
    await started(host)
    try:
        yield host
    finally:
        await host.stop()


class ServedApp:
    """Any ASGI app (a node) on 127.0.0.1 in a thread, lifespan included."""

    def __init__(self, app: Any) -> None:
        import asyncio
        import threading

        import uvicorn
        from standin.server import free_socket

        self._sock = free_socket()
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on",
                                                     ws="none", access_log=False))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
