"""Both directions against the real npm package @hellocoop/httpsig 2.x (``aauth.md`` §6).

Never skipped: without Node or ``node_modules`` these tests fail and say how to fix it.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from darkmesh_aauth.registry import TrustRegistry
from darkmesh_aauth.testing import MemoryReplayCache, inbound, new_agent, write_trust_file
from darkmesh_aauth.verifier import AAuthVerifier

from sdl_core import VerificationFailed

BRIDGE_DIR = Path(__file__).resolve().parents[3] / "interop" / "httpsig"
AUTHORITY = "localhost:8001"
CASES = [  # method, path, query, body
    ("GET", "/darkmesh/capabilities", "", None),
    ("GET", "/darkmesh/skills/warm-intro/status", "request_id=r%201&x=2", None),
    ("POST", "/darkmesh/ingest", "", '{"dataset": "contacts", "records": []}'),
    ("POST", "/darkmesh/relay/posts", "dry=1", '{"template": "warm_intro_v2"}'),
]


def bridge(payload: Any) -> Any:
    if shutil.which("node") is None:
        pytest.fail("node (Node 20) is not on PATH; the httpsig interop tests need it")
    if not (BRIDGE_DIR / "node_modules" / "@hellocoop" / "httpsig").is_dir():
        pytest.fail(f"@hellocoop/httpsig is not installed: run "
                    f"`npm ci --prefix interop/httpsig` in the repository root ({BRIDGE_DIR})")
    done = subprocess.run(["node", "bridge.mjs"], input=json.dumps(payload), text=True, check=False,
                          capture_output=True, cwd=BRIDGE_DIR, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_pinned_version_is_2x() -> None:
    package = json.loads((BRIDGE_DIR / "package.json").read_text())
    pinned = package["dependencies"]["@hellocoop/httpsig"]
    assert pinned.startswith("2.") and pinned.replace(".", "").isdigit()  # exact pin
    lock = json.loads((BRIDGE_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@hellocoop/httpsig"]["version"] == pinned


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_ours_verify_with_httpsig(alg: str) -> None:
    agent = new_agent(alg)  # type: ignore[arg-type]
    requests: list[dict[str, Any]] = []
    expected: list[str | None] = []
    for method, path, query, body in CASES:
        raw = (body or "").encode()
        url = f"http://{AUTHORITY}{path}" + (f"?{query}" if query else "")
        headers = agent.sign(method, url, body=raw)
        requests.append({"op": "verify", "request": {
            "method": method, "authority": AUTHORITY, "path": path, "query": query,
            "headers": headers, "body_b64": base64.b64encode(raw).decode() if body else None}})
        expected.append(agent.thumbprint)
        # The same request with a tampered body must fail there too.
        if body:
            requests.append({"op": "verify", "request": {
                **requests[-1]["request"], "body_b64": base64.b64encode(raw + b" ").decode()}})
            expected.append(None)
    for verdict, thumbprint in zip(bridge(requests), expected, strict=True):
        if thumbprint is None:
            assert verdict["verified"] is False
        else:
            assert verdict["verified"] is True, verdict
            assert verdict["thumbprint"] == thumbprint
            assert verdict["label"] == "aasig" and verdict["keyType"] == "jwt"


@pytest.mark.asyncio
@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
async def test_httpsig_dry_runs_verify_with_ours(alg: str, tmp_path: Path) -> None:
    agent = new_agent(alg)  # type: ignore[arg-type]
    verifier = AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "r.json", [agent])))
    token = agent.role.token(int(time.time()))
    jobs = []
    for method, path, query, body in CASES:
        job: dict[str, Any] = {
            "op": "sign", "url": f"http://{AUTHORITY}{path}" + (f"?{query}" if query else ""),
            "method": method, "signingKey": agent.key.private_jwk, "jwt": token,
            "headers": {"content-type": "application/json"} if body else {}, "body": body,
        }
        if query:  # httpsig's defaults leave the query uncovered
            job["components"] = ["@method", "@authority", "@path", "@request-target",
                                 *(["content-type"] if body else []), "signature-key"]
        jobs.append(job)
    signed = bridge(jobs)
    cache = MemoryReplayCache()
    for (method, path, query, body), result in zip(CASES, signed, strict=True):
        assert "exception" not in result, result
        url = f"http://{AUTHORITY}{path}" + (f"?{query}" if query else "")
        request = inbound(method, url, result["headers"], (body or "").encode())
        agent_seen = await verifier.verify(request, authorities=[AUTHORITY],
                                           remember_once=cache)
        assert agent_seen.thumbprint == agent.thumbprint and agent_seen.label == "aasig"
        if body:
            assert result["headers"]["content-digest"].startswith("sha-256=:")


@pytest.mark.asyncio
async def test_what_httpsig_accepts_and_we_refuse(tmp_path: Path) -> None:
    """Rows of aauth.md §2.6: httpsig's verify() passes each, ours refuses each."""
    agent = new_agent()
    verifier = AAuthVerifier(TrustRegistry(write_trust_file(tmp_path / "r.json", [agent])))
    token = agent.role.token(int(time.time()))
    query_url = f"http://{AUTHORITY}/darkmesh/skills/warm-intro/status?request_id=1"
    jobs = [
        # query uncovered (httpsig's default components)
        {"op": "sign", "url": query_url, "method": "GET", "signingKey": agent.key.private_jwk,
         "jwt": token},
        # only signature-key covered
        {"op": "sign", "url": f"http://{AUTHORITY}/darkmesh/capabilities", "method": "GET",
         "signingKey": agent.key.private_jwk, "jwt": token, "components": ["signature-key"]},
    ]
    uncovered, minimal = bridge(jobs)
    theirs = bridge([
        {"op": "verify", "request": {"method": "GET", "authority": AUTHORITY,
                                     "path": "/darkmesh/skills/warm-intro/status",
                                     "query": "request_id=1", "headers": uncovered["headers"]}},
        {"op": "verify", "request": {"method": "GET", "authority": AUTHORITY,
                                     "path": "/darkmesh/capabilities",
                                     "headers": minimal["headers"]}},
    ])
    assert [v["verified"] for v in theirs] == [True, True]
    cache = MemoryReplayCache()
    refusals = []
    for url, result in ((query_url, uncovered),
                        (f"http://{AUTHORITY}/darkmesh/capabilities", minimal)):
        with pytest.raises(VerificationFailed) as refused:
            await verifier.verify(inbound("GET", url, result["headers"]),
                                  authorities=[AUTHORITY], remember_once=cache)
        refusals.append(refused.value.reason)
    assert refusals == ["query_not_covered", "signature_covered_components_incomplete"]

    # replay: httpsig verifies the same request twice, we accept it once
    ours = agent.sign("GET", f"http://{AUTHORITY}/darkmesh/capabilities")
    twice = bridge([{"op": "verify", "request": {"method": "GET", "authority": AUTHORITY,
                                                 "path": "/darkmesh/capabilities",
                                                 "headers": ours}}] * 2)
    assert [v["verified"] for v in twice] == [True, True]
    request = inbound("GET", f"http://{AUTHORITY}/darkmesh/capabilities", ours)
    await verifier.verify(request, authorities=[AUTHORITY], remember_once=cache)
    with pytest.raises(VerificationFailed, match="replayed"):
        await verifier.verify(request, authorities=[AUTHORITY], remember_once=cache)
