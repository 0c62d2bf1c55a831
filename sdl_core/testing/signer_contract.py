"""``SignerContract``: a signer's output verifies under the matching verifier.

Subclass it in your plugin's tests and supply two fixtures (and optionally three more)::

    from sdl_core.testing.signer_contract import SignerContract

    class TestAAuthSigner(SignerContract):
        @pytest.fixture
        def signer(self, tmp_path):
            return make_signer_with_fresh_key(tmp_path)      # your Signer

        @pytest.fixture
        def verifier(self, signer, tmp_path):
            return verifier_trusting(signer.identity("node"))  # your Verifier

Fixtures:

``signer`` (required)
    An object implementing :class:`sdl_core.Signer` that ``has_role(signer_role)``.
    ``signer.auth(signer_role)`` must return an ``httpx.Auth`` that signs each request it
    is given (the suite drives its ``async_auth_flow`` by hand and takes the first
    request the flow yields, as httpx does for a request without a challenge).

``verifier`` (required)
    An object implementing :class:`sdl_core.Verifier` whose trust registry holds the
    signer's key for ``signer_role`` (any capabilities), so ``ready()`` is True. The
    suite calls ``verify(request, authorities=[authority], remember_once=cache)`` with a
    fresh in-memory replay cache per check unless the check is about replays.

``signer_role`` (optional, default ``"node"``)
    The role to sign as (``"node"``, ``"operator"``, ``"connector:<name>"``).

``authority`` (optional, default ``"node.example:8443"``)
    The ``host[:port]`` requests are sent to and the verifier is configured with.

``url_scheme`` (optional, default ``"https"``)
    The scheme of the request URLs.

Properties checked, with Hypothesis choosing method, path, query, extra headers and
body: a signed request verifies and names the signer's ``sub``; a replay of it is
refused; a single-byte change to the method, the path, the query (or a query added to a
request signed without one) or the body is refused; the same request checked against
another authority is refused; an added header that is not covered does not matter.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdl_core.errors import VerificationFailed
from sdl_core.protocols import InboundRequest, ReplayCache, Signer, Verifier

__all__ = ["SignedCase", "SignerContract", "memory_replay_cache", "signed_inbound"]

_SAFE = string.ascii_letters + string.digits + "-._~"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def memory_replay_cache() -> ReplayCache:
    """A fresh replay cache: True the first time a key is seen within its ttl."""
    seen: dict[str, float] = {}

    async def remember_once(key: str, ttl: float) -> bool:
        now = time.monotonic()
        if seen.get(key, 0.0) > now:
            return False
        seen[key] = now + ttl
        return True

    return remember_once


@dataclass(frozen=True)
class SignedCase:
    """One request as generated, before signing."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _to_inbound(request: httpx.Request) -> InboundRequest:
    raw = request.url.raw_path.decode("ascii")
    path, _, query = raw.partition("?")
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
               for k, v in request.headers.raw]
    return InboundRequest(method=request.method.upper(), raw_path=path or "/", query=query,
                          headers=headers, body=request.content)


async def signed_inbound(auth: httpx.Auth, case: SignedCase, *, scheme: str,
                         authority: str) -> InboundRequest:
    """Sign ``case`` with ``auth`` (one pass of its async flow) and return what a server
    would receive."""
    url = f"{scheme}://{authority}{case.path}" + (f"?{case.query}" if case.query else "")
    headers = dict(case.headers)
    if case.body:
        headers["content-type"] = "application/json"
    request = httpx.Request(case.method, url, headers=headers, content=case.body or None)
    flow = auth.async_auth_flow(request)
    signed = await flow.__anext__()
    await flow.aclose()
    return _to_inbound(signed)


def _segment() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(list(_SAFE)) | st.sampled_from(["%20", "%2F", "%C3%A9"]),
                    min_size=1, max_size=12).map("".join)


@st.composite
def request_cases(draw: st.DrawFn) -> SignedCase:
    """Arbitrary method, raw path, query, extra headers and (for body methods) body."""
    method = draw(st.sampled_from(METHODS))
    path = "/" + "/".join(draw(st.lists(_segment(), min_size=0, max_size=4)))
    pairs = draw(st.lists(st.tuples(st.text(_SAFE, min_size=1, max_size=8),
                                    st.text(string.printable.strip(), max_size=12)),
                          max_size=3))
    query = urlencode(pairs, quote_via=quote)
    names = draw(st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=10)
                          .map(lambda n: f"x-{n}"), unique=True, max_size=3))
    header_value = st.text(string.ascii_letters + string.digits + " ,;=/:-", min_size=1,
                           max_size=24).map(str.strip).filter(bool)
    headers = tuple((name, draw(header_value)) for name in names)
    body = b""
    if method in BODY_METHODS:
        document = draw(st.dictionaries(st.text(max_size=8),
                                        st.text(max_size=16) | st.integers() | st.booleans(),
                                        max_size=4))
        body = json.dumps(document).encode("utf-8")
    return SignedCase(method=method, path=path, query=query, headers=headers, body=body)


def _flip(text: str, index: int, alphabet: str = _SAFE) -> str:
    """``text`` with the character at ``index`` replaced by a different safe one."""
    index %= len(text)
    current = text[index]
    replacement = next(c for c in alphabet if c != current)
    return text[:index] + replacement + text[index + 1:]


class SignerContract:
    """The suite. Subclass it and provide ``signer`` and ``verifier`` fixtures.

    ``hypothesis_settings`` (a class attribute) tunes the property run, e.g.
    ``{"max_examples": 200}`` for a slower, deeper check.
    """

    hypothesis_settings: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def signer_role(self) -> str:
        return "node"

    @pytest.fixture
    def authority(self) -> str:
        return "node.example:8443"

    @pytest.fixture
    def url_scheme(self) -> str:
        return "https"

    @pytest.fixture
    def contract_loop(self) -> Iterator[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        yield loop
        loop.close()

    # ----------------------------------------------------------------- helpers

    def _verify(self, loop: asyncio.AbstractEventLoop, verifier: Verifier,
                request: InboundRequest, authority: str,
                cache: ReplayCache | None = None) -> Any:
        return loop.run_until_complete(verifier.verify(
            request, authorities=[authority], remember_once=cache or memory_replay_cache()))

    def _refused(self, loop: asyncio.AbstractEventLoop, verifier: Verifier,
                 request: InboundRequest, authority: str, what: str) -> None:
        try:
            self._verify(loop, verifier, request, authority)
        except VerificationFailed:
            return
        raise AssertionError(f"verifier accepted a request with {what}")

    def _sign(self, loop: asyncio.AbstractEventLoop, signer: Signer, role: str,
              case: SignedCase, scheme: str, authority: str) -> InboundRequest:
        return loop.run_until_complete(
            signed_inbound(signer.auth(role), case, scheme=scheme, authority=authority))

    # ------------------------------------------------------------------- tests

    def test_signer_has_the_role_and_verifier_is_ready(
        self, signer: Signer, verifier: Verifier, signer_role: str
    ) -> None:
        assert signer.has_role(signer_role)
        assert signer.identity(signer_role).sub
        assert verifier.ready()
        assert isinstance(signer.auth(signer_role), httpx.Auth)

    def test_signed_requests_verify_and_mutations_fail(
        self, signer: Signer, verifier: Verifier, signer_role: str, authority: str,
        url_scheme: str, contract_loop: asyncio.AbstractEventLoop,
    ) -> None:
        sub = signer.identity(signer_role).sub
        loop = contract_loop

        options: dict[str, Any] = {
            "max_examples": 40, "deadline": None,
            "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            **self.hypothesis_settings,
        }

        @settings(**options)
        @given(case=request_cases(), position=st.integers(min_value=0, max_value=10_000),
               other_method=st.sampled_from(METHODS))
        def check(case: SignedCase, position: int, other_method: str) -> None:
            inbound = self._sign(loop, signer, signer_role, case, url_scheme, authority)
            cache = memory_replay_cache()
            agent = self._verify(loop, verifier, inbound, authority, cache)
            assert agent.sub == sub

            # The exact same bytes again: a replay.
            try:
                self._verify(loop, verifier, inbound, authority, cache)
            except VerificationFailed:
                pass
            else:
                raise AssertionError("verifier accepted a replayed request")

            # An uncovered header added in transit changes nothing.
            extra = replace(inbound, headers=[*inbound.headers, ("x-added-by-proxy", "1")])
            assert self._verify(loop, verifier, extra, authority).sub == sub

            if other_method != case.method:
                self._refused(loop, verifier, replace(inbound, method=other_method), authority,
                              f"its method changed {case.method} -> {other_method}")
            self._refused(loop, verifier,
                          replace(inbound, raw_path=_flip(inbound.raw_path, position)),
                          authority, "one byte of its path changed")
            if inbound.query:
                self._refused(loop, verifier,
                              replace(inbound, query=_flip(inbound.query, position)),
                              authority, "one byte of its query changed")
            else:
                self._refused(loop, verifier, replace(inbound, query="x"), authority,
                              "a query added after signing")
            if inbound.body:
                index = position % len(inbound.body)
                body = bytearray(inbound.body)
                body[index] = (body[index] + 1) % 256
                self._refused(loop, verifier, replace(inbound, body=bytes(body)), authority,
                              "one byte of its body changed")
            self._refused(loop, verifier, inbound, "elsewhere.example:8443",
                          "a different configured authority")

        check()
