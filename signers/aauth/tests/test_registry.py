"""The trust registry: validation, hot reload, last good snapshot, revocation, permissions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from darkmesh_aauth.registry import RegistryError, TrustRegistry, parse_registry, read_registry
from darkmesh_aauth.testing import new_agent, write_trust_file

B14 = {"kty": "OKP", "crv": "Ed25519", "alg": "Ed25519",
       "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}
B14_TP = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"


def doc(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "agents": list(entries), **top}


def entry(**changes: Any) -> dict[str, Any]:
    base = {"label": "node_b at this relay", "thumbprint": B14_TP, "sub": "darkmesh-node@node_b",
            "iss": "https://darkmesh.local", "public_jwk": dict(B14),
            "capabilities": ["relay.register", " relay.pull ", ""]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_the_spec_example_loads() -> None:
    snapshot = parse_registry(doc(entry(), _description="ignored"), ["relay.register"])
    (loaded,) = snapshot.entries
    assert loaded.thumbprint == B14_TP
    assert loaded.capabilities == frozenset({"relay.register", "relay.pull"})
    assert snapshot.warnings == ("agents[0].capabilities: unknown capability 'relay.pull' (kept)",)


@pytest.mark.parametrize(("document", "message"), [
    ([], "root: must be a JSON object"),
    ({"agents": {}}, "agents: required, a JSON array"),
    (doc(version=2), "version: must be 1"),
    (doc(entry(thumbprint="abc")), "agents[0].thumbprint: 'abc' does not match"),
    (doc(entry(thumbprint=None)), "agents[0].thumbprint: required"),
    (doc(entry(), entry()), "agents[1].thumbprint: duplicate of agents[0]"),
    (doc(entry(sub="")), "agents[0].sub: required"),
    (doc(entry(public_jwk={**B14, "d": "secret"})), "agents[0].public_jwk: contains private"),
    (doc(entry(public_jwk={"kty": "oct", "k": "c2VjcmV0"})), "agents[0].public_jwk: contains"),
    (doc(entry(public_jwk={"kty": "RSA", "n": "x", "e": "AQAB"})), "unsupported key"),
    (doc(entry(public_jwk={**B14, "x": "short"})), "agents[0].public_jwk: member 'x'"),
    (doc(entry(public_jwk={**B14, "alg": "ES256"})), "agents[0].public_jwk.alg"),
    (doc(entry(capabilities="relay.pull")), "agents[0].capabilities: must be a list"),
    (doc(entry(iss=3)), "agents[0].iss: must be a string"),
])
def test_violations_reject_the_whole_file(document: Any, message: str) -> None:
    with pytest.raises(RegistryError) as refused:
        parse_registry(document)
    assert message in str(refused.value)


def test_issuer_wildcards_and_label_default() -> None:
    for iss in (None, "", "*"):
        (loaded,) = parse_registry(doc(entry(iss=iss, label=None))).entries
        assert loaded.iss is None
        assert loaded.label == "darkmesh-node@node_b"


def test_upstream_eddsa_alg_is_read_as_ed25519() -> None:
    snapshot = parse_registry(doc(entry(public_jwk={**B14, "alg": "EdDSA"})))
    assert snapshot.entries[0].public_jwk["alg"] == "Ed25519"
    assert "upstream" in snapshot.warnings[0]


def test_group_writable_file_is_refused(tmp_path: Path) -> None:
    path = write_trust_file(tmp_path / "r.json", [new_agent()])
    os.chmod(path, 0o664)
    with pytest.raises(RegistryError, match="run chmod 600"):
        read_registry(path)
    registry = TrustRegistry(path)
    assert len(registry) == 0
    assert "writable by group or others" in registry.status()["last_error"]


def _touch(path: Path, text: str) -> None:
    # Different size or mtime: the stat signature changes even within one clock tick.
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_hot_reload_add_malformed_edit_and_delete(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    first, second = new_agent(), new_agent(sub="darkmesh-node@node_c")
    path = write_trust_file(tmp_path / "r.json", [first])
    registry = TrustRegistry(path)
    status = registry.status()
    assert status["entries"] == 1 and status["last_error"] is None
    assert status["path"] == str(path) and status["loaded_at"]
    assert registry.lookup(first.thumbprint) is not None

    write_trust_file(path, [first, second])
    registry.refresh()
    assert registry.lookup(second.thumbprint) is not None  # added: works on the next request

    with caplog.at_level(logging.ERROR, logger="darkmesh.aauth.registry"):
        _touch(path, '{"version": 1, "agents": [')
        registry.refresh()
        registry.refresh()
    assert len(registry) == 2  # last good snapshot kept
    assert "not valid JSON" in registry.status()["last_error"]
    assert "keeping the last good registry (2 entries)" in registry.status()["last_error"]
    assert len([r for r in caplog.records if "not valid JSON" in r.message]) == 1  # once

    write_trust_file(path, [second])
    registry.refresh()
    assert registry.lookup(first.thumbprint) is None  # removed: revoked on the next request
    assert registry.status()["last_error"] is None

    path.unlink()
    registry.refresh()
    assert len(registry) == 0  # deleted after a good load: fail closed
    assert "does not exist" in registry.status()["last_error"]


@pytest.mark.asyncio
async def test_revocation_and_hot_add_through_the_node(make_node: Callable[..., Any]) -> None:
    kept = new_agent(capabilities=("node.query",))
    revoked = new_agent(sub="darkmesh-node@node_c", capabilities=("node.query",))
    node = await make_node([kept, revoked])
    url = "http://localhost:8001/darkmesh/skills/echo/echo"
    assert (await node.client.get(url, headers=revoked.sign("GET", url))).status_code == 200

    write_trust_file(node.registry, [kept])
    refused = await node.client.get(url, headers=revoked.sign("GET", url))
    assert refused.status_code == 401 and refused.json()["reason"] == "unknown_thumbprint"

    newcomer = new_agent(sub="darkmesh-node@node_d", capabilities=("node.query",))
    write_trust_file(node.registry, [kept, newcomer])
    assert (await node.client.get(url, headers=newcomer.sign("GET", url))).status_code == 200

    _touch(node.registry, "{not json")
    assert (await node.client.get(url, headers=kept.sign("GET", url))).status_code == 200
    status = await node.host.plugin_status()
    assert status["verifier"]["entries"] == 2
    assert "not valid JSON" in status["verifier"]["last_error"]

    node.registry.unlink()
    empty = await node.client.get(url, headers=kept.sign("GET", url))
    assert empty.status_code == 503


def test_registry_writes_are_0600_and_atomic(tmp_path: Path) -> None:
    path = write_trust_file(tmp_path / "sub" / "r.json", [new_agent()])
    assert (path.stat().st_mode & 0o777) == 0o600
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left behind
