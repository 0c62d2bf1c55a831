"""The core's ``SignerContract`` against this plugin, plus properties of its own:
any single-byte change to a covered part of a signed request is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from darkmesh_aauth.registry import TrustRegistry
from darkmesh_aauth.settings import AAuthSettings
from darkmesh_aauth.signer import AAuthSigner
from darkmesh_aauth.testing import MemoryReplayCache, inbound, new_agent, write_trust_file
from darkmesh_aauth.verifier import AAuthVerifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from sdl_core import HTTPProblem
from sdl_core.testing.signer_contract import SignerContract


def _signer(tmp_path: Path, alg: str) -> AAuthSigner:
    agent = new_agent(alg)  # type: ignore[arg-type]
    return AAuthSigner(AAuthSettings(private_jwk=SecretStr(json.dumps(agent.key.private_jwk)),
                                     key_dir=tmp_path / "keys"), node_id="node_a")


def _verifier(signer: AAuthSigner, tmp_path: Path, scheme: str) -> AAuthVerifier:
    identity = signer.identity("node")
    entry = {"thumbprint": identity.thumbprint, "sub": identity.sub, "iss": identity.iss,
             "public_jwk": dict(identity.public_jwk), "capabilities": ["*"]}
    return AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "r.json", [entry])),
                         scheme=scheme)


class TestEd25519Signer(SignerContract):
    @pytest.fixture
    def signer(self, tmp_path: Path) -> AAuthSigner:
        return _signer(tmp_path, "Ed25519")

    @pytest.fixture
    def verifier(self, signer: AAuthSigner, tmp_path: Path) -> AAuthVerifier:
        return _verifier(signer, tmp_path, "https")


class TestES256Signer(SignerContract):
    @pytest.fixture
    def signer(self, tmp_path: Path) -> AAuthSigner:
        return _signer(tmp_path, "ES256")

    @pytest.fixture
    def verifier(self, signer: AAuthSigner, tmp_path: Path) -> AAuthVerifier:
        return _verifier(signer, tmp_path, "https")


AUTHORITY = "localhost:8001"
path_segments = st.lists(st.text("abcXYZ019-._~%2F", min_size=1, max_size=8), max_size=4)
queries = st.one_of(st.just(""), st.lists(
    st.tuples(st.text("abcq", min_size=1, max_size=4), st.text("xyz19%20", max_size=6)),
    min_size=1, max_size=3).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
       segments=path_segments, query=queries, body=st.binary(max_size=64),
       extra=st.dictionaries(st.sampled_from(["x-a", "x-trace", "accept"]),
                             st.text("abc ;=/", min_size=1, max_size=8), max_size=2),
       data=st.data())
def test_any_single_byte_change_to_a_covered_part_fails(
    tmp_path: Path, method: str, segments: list[str], query: str, body: bytes,
    extra: dict[str, str], data: st.DataObject,
) -> None:
    agent = new_agent()
    verifier = AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "p.json", [agent])))
    path = "/" + "/".join(segments)
    url = f"http://{AUTHORITY}{path}" + (f"?{query}" if query else "")
    headers = agent.sign(method, url, headers=extra, body=body)
    request = inbound(method, url, headers, body)

    def verdict(candidate: object) -> str:
        try:
            asyncio.run(verifier.verify(candidate, authorities=[AUTHORITY],  # type: ignore[arg-type]
                                        remember_once=MemoryReplayCache()))
        except HTTPProblem as exc:
            return str(exc.reason)
        return "ok"

    assert verdict(request) == "ok"
    parts = ["method", "path", "body" if body else "path", "query" if query else "path",
             "header"]
    part = data.draw(st.sampled_from(parts))
    from dataclasses import replace

    def flip(value: bytes) -> bytes:
        index = data.draw(st.integers(0, len(value) - 1))
        delta = data.draw(st.integers(1, 255))
        return value[:index] + bytes([(value[index] + delta) % 256]) + value[index + 1:]

    if part == "method":
        changed = replace(request, method=flip(method.encode()).decode("latin-1"))
    elif part == "path":
        changed = replace(request, raw_path=flip(path.encode()).decode("latin-1"))
    elif part == "query":
        changed = replace(request, query=flip(query.encode()).decode("latin-1"))
    elif part == "body":
        changed = replace(request, body=flip(body))
    else:
        covered = [k for k, _ in request.headers
                   if k in ("content-type", "content-digest", "signature-key")]
        name = data.draw(st.sampled_from(covered))
        headers_changed = [(k, flip(v.encode()).decode("latin-1") if k == name else v)
                           for k, v in request.headers]
        changed = replace(request, headers=headers_changed)
    if changed == request:
        return
    assert verdict(changed) != "ok"
