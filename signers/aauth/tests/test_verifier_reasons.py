"""One refused request per reason code of ``aauth.md`` §2.2/§2.3, through a real node app
(the core guard in front of this plugin's verifier): exact 401 body and Signature-Error."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from darkmesh_aauth.digest import content_digest
from darkmesh_aauth.keys import b64url_decode, b64url_encode
from darkmesh_aauth.reasons import REASON_CODES, SIGNATURE_ERROR
from darkmesh_aauth.signer import covered_components
from darkmesh_aauth.testing import Agent, forge_token, new_agent, sign_custom, standard_claims
from darkmesh_aauth.token import TOKEN_TYPE

NODE_URL = "http://localhost:8001"
ECHO = f"{NODE_URL}/darkmesh/skills/echo/echo"
INGEST = f"{NODE_URL}/darkmesh/skills/echo/ingest"
Node = Any  # the conftest's Node: host, client, registry, agent
Spec = dict[str, Any]  # {method, url, headers, body}


def now() -> int:
    return int(time.time())


def header_of(agent: Agent, **changes: Any) -> dict[str, Any]:
    head = {"alg": agent.key.algorithm, "typ": TOKEN_TYPE, "kid": agent.thumbprint}
    head.update(changes)
    return {k: v for k, v in head.items() if v is not None}


def custom(agent: Agent, *, token: str | None = None, method: str = "GET", url: str = ECHO,
           components: list[str] | None = None, params: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None, body: bytes = b"",
           signing_key: Any = None) -> Spec:
    """A request signed like ours, except for what the caller changes."""
    own = dict(headers or {})
    if body and "Content-Digest" not in own:
        own.setdefault("Content-Type", "application/json")
        own["Content-Digest"] = content_digest(body)
    has_query = "?" in url and bool(url.split("?", 1)[1])
    token = token or forge_token(agent.key, header_of(agent), standard_claims(agent))
    signed = sign_custom(
        signing_key or agent.key, method=method, url=url, token=token,
        components=components or covered_components(has_body=bool(body), has_query=has_query),
        params=params if params is not None else {"created": now(), "nonce": "n-" + str(now())},
        headers=own,
    )
    return {"method": method, "url": url, "headers": signed, "body": body}


def claims_token(agent: Agent, **changes: Any) -> str:
    return forge_token(agent.key, header_of(agent), standard_claims(agent, **changes))


def jwk_token(agent: Agent, jwk: Any, **header: Any) -> str:
    return forge_token(agent.key, header_of(agent, **header),
                       standard_claims(agent, cnf={"jwk": jwk}))


def ours(agent: Agent, method: str = "GET", url: str = ECHO, body: bytes = b"") -> Spec:
    return {"method": method, "url": url, "headers": agent.sign(method, url, body=body),
            "body": body}


def without(spec: Spec, *names: str) -> Spec:
    spec["headers"] = {k: v for k, v in spec["headers"].items() if k.lower() not in names}
    return spec


def with_headers(spec: Spec, **values: str) -> Spec:
    spec["headers"] = {**spec["headers"], **{k.replace("_", "-"): v for k, v in values.items()}}
    return spec


def non_canonical(value: str) -> str:
    """Same bytes under a lenient decoder, different string: flip the unused low bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(value[-1])
    changed = value[:-1] + alphabet[last ^ 1]
    assert b64url_decode(value) != b"" and changed != value
    return changed


# Each builder gets the trusted agent and an untrusted one and returns the request to send.
CASES: dict[str, Callable[[Agent, Agent], Spec]] = {
    "signature_key_missing": lambda a, o: without(ours(a), "signature-key"),
    "signature_key_malformed": lambda a, o: with_headers(
        ours(a), **{"Signature-Key": 'aasig=jwt;jwt="a.b.c", other=jwt;jwt="d.e.f"'}),
    "signature_missing": lambda a, o: without(ours(a), "signature"),
    "signature_malformed": lambda a, o: with_headers(ours(a), **{
        "Signature-Input": ours(a)["headers"]["Signature-Input"].replace('"@path"', '"@Path"')}),
    "created_missing": lambda a, o: custom(a, params={"nonce": "abc"}),
    "unsupported_scheme": lambda a, o: with_headers(
        ours(a), **{"Signature-Key": 'aasig=hwk;kty="OKP";crv="Ed25519";x="abc"'}),
    "jwt_alg_invalid": lambda a, o: custom(
        a, token=forge_token(a.key, header_of(a, alg="EdDSA"), standard_claims(a))),
    "cnf_jwk_alg_missing": lambda a, o: custom(
        a, token=jwk_token(a, {k: v for k, v in a.key.public_jwk.items() if k != "alg"})),
    "cnf_jwk_unsupported": lambda a, o: custom(
        a, token=jwk_token(a, {**a.key.public_jwk, "alg": "EdDSA"})),
    "cnf_jwk_malformed": lambda a, o: custom(
        a, token=jwk_token(a, {**a.key.public_jwk, "x": "not*base64url"})),
    "cnf_jwk_not_public": lambda a, o: custom(
        a, token=jwk_token(a, {"kty": "oct", "k": b64url_encode(b"s" * 32), "alg": "HS256"})),
    "cnf_jwk_private": lambda a, o: custom(
        a, token=jwk_token(a, {**a.key.public_jwk, "d": a.key.private_jwk["d"]})),
    "thumbprint_failed": lambda a, o: custom(
        a, token=jwk_token(a, {**a.key.public_jwk, "x": non_canonical(a.key.public_jwk["x"])})),
    "unknown_thumbprint": lambda a, o: ours(o),
    "jwt_malformed": lambda a, o: custom(a, token="only.two"),
    "jwt_decode_failed": lambda a, o: custom(
        a, token=f"{b64url_encode(b'not json')}.{b64url_encode(b'{}')}.{b64url_encode(b'x')}"),
    "jwt_typ_invalid": lambda a, o: custom(
        a, token=forge_token(a.key, header_of(a, typ="JWT"), standard_claims(a))),
    "jwt_sub_missing": lambda a, o: custom(a, token=claims_token(a, sub=None)),
    "jwt_iss_missing": lambda a, o: custom(a, token=claims_token(a, iss="")),
    "jwt_iat_missing": lambda a, o: custom(a, token=claims_token(a, iat="yesterday")),
    "jwt_iat_future": lambda a, o: custom(
        a, token=claims_token(a, iat=now() + 3600, exp=now() + 3900)),
    "jwt_exp_missing": lambda a, o: custom(a, token=claims_token(a, exp=None)),
    "jwt_expired": lambda a, o: custom(
        a, token=claims_token(a, iat=now() - 1000, exp=now() - 700)),
    "jwt_lifetime_excessive": lambda a, o: custom(
        a, token=claims_token(a, iat=now(), exp=now() + 86401)),
    "jwt_jti_missing": lambda a, o: custom(a, token=claims_token(a, jti=None)),
    "cnf_jwk_missing": lambda a, o: custom(a, token=claims_token(a, cnf=None)),
    "jwt_jkt_mismatch": lambda a, o: custom(a, token=claims_token(a, jkt=o.thumbprint)),
    # The token says it is a's key, but the JWS is by another key.
    "jwt_signature_invalid": lambda a, o: custom(
        a, token=forge_token(o.key, header_of(a), standard_claims(a))),
    "sub_mismatch": lambda a, o: custom(a, token=claims_token(a, sub="darkmesh-node@node_x")),
    "iss_mismatch": lambda a, o: custom(a, token=claims_token(a, iss="https://elsewhere.example")),
    "signature_covered_components_incomplete": lambda a, o: custom(
        a, components=["@method", "@path", "signature-key"]),
    "query_not_covered": lambda a, o: custom(
        a, url=ECHO + "?limit=5", components=["@method", "@authority", "@path", "signature-key"]),
    "component_header_missing": lambda a, o: without(
        custom(a, components=["@method", "@authority", "@path", "x-trace", "signature-key"],
               headers={"X-Trace": "1"}), "x-trace"),
    "content_digest_missing": lambda a, o: without(
        ours(a, "POST", body=b'{"a": 1}'), "content-digest"),
    "content_digest_malformed": lambda a, o: custom(
        a, method="POST", body=b'{"a": 1}',
        headers={"Content-Type": "application/json", "Content-Digest": "sha-256=abc"}),
    "content_digest_unsupported": lambda a, o: custom(
        a, method="POST", body=b'{"a": 1}',
        headers={"Content-Type": "application/json",
                 "Content-Digest": "sha-512=:" + "A" * 86 + "==:"}),
    "content_digest_mismatch": lambda a, o: {**ours(a, "POST", body=b'{"a": 1}'),
                                             "body": b'{"a": 2}'},
    "signature_invalid": lambda a, o: {**ours(a, "POST", body=b'{"a": 1}'),
                                       "url": INGEST},
    "created_out_of_window": lambda a, o: custom(a, params={"created": now() - 120}),
    "expired_signature": lambda a, o: custom(
        a, params={"created": now() - 30, "expires": now() - 2}),
    "keyid_mismatch": lambda a, o: custom(
        a, params={"created": now(), "keyid": o.thumbprint}),
    "authority_mismatch": lambda a, o: with_headers(
        ours(a, url="http://relay-x.example:9000/darkmesh/skills/echo/echo"),
        Host="relay-x.example:9000"),
}


def test_every_reason_code_has_a_case() -> None:
    assert set(CASES) | {"replayed"} == set(REASON_CODES)
    assert len(REASON_CODES) == 43  # 26 upstream + 17 new


async def send(node: Node, spec: Spec) -> httpx.Response:
    url = spec["url"]
    path = url[len(NODE_URL):] if url.startswith(NODE_URL) else "/" + url.split("/", 3)[3]
    response: httpx.Response = await node.client.request(
        spec["method"], path, headers=spec["headers"], content=spec["body"])
    return response


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": f"AAuth verification failed: {reason}",
                               "reason": reason}
    error = SIGNATURE_ERROR[reason]
    signature_error = response.headers["signature-error"]
    assert signature_error.startswith(f"error={error}")
    if error == "invalid_input":
        assert "required_input=(" in signature_error
    if error == "unsupported_scheme":
        assert response.headers["accept-signature-scheme"] == "jwt"
    if error == "unsupported_algorithm":
        assert response.headers["accept-signature-alg"] == "Ed25519, ES256"


@pytest.mark.asyncio
@pytest.mark.parametrize("reason", sorted(CASES))
async def test_refused_with_reason(node: Node, reason: str) -> None:
    other = new_agent("Ed25519", sub="darkmesh-node@node_a")
    spec = CASES[reason](node.agent, other)
    assert_refused(await send(node, spec), reason)
    # The same agent's untampered request still passes: the case broke exactly one thing.
    ok = await send(node, ours(node.agent))
    assert ok.status_code == 200, ok.text


@pytest.mark.asyncio
async def test_replayed(node: Node) -> None:
    spec = ours(node.agent)
    first = await send(node, spec)
    assert first.status_code == 200
    assert first.json()["sub"] == "darkmesh-node@node_a"
    assert_refused(await send(node, spec), "replayed")


@pytest.mark.asyncio
async def test_required_input_names_what_this_request_needs(node: Node) -> None:
    spec = custom(node.agent, method="POST", url=ECHO + "?x=1", body=b"{}",
                  components=["@method", "@authority", "@path", "signature-key"])
    response = await send(node, spec)
    assert response.headers["signature-error"] == (
        'error=invalid_input, required_input=("@method" "@authority" "@path" '
        '"@request-target" "content-type" "content-digest" "signature-key")'
    )


@pytest.mark.asyncio
async def test_unsigned_request_in_aauth_mode(node: Node) -> None:
    response = await node.client.get("/darkmesh/skills/echo/echo")
    assert response.status_code == 401
    assert response.json()["detail"] == "AAuth signature required"
    assert response.headers["signature-error"] == "error=invalid_request"


@pytest.mark.asyncio
async def test_missing_capability_is_403_without_signature_error(node: Node) -> None:
    url = INGEST
    response = await send(node, ours(node.agent, "POST", url=url, body=b"{}"))
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "agent 'darkmesh-node@node_a' is not permitted to use capability 'node.ingest'"
    )
    assert "signature-error" not in response.headers
    assert not any(h.startswith("accept-signature") for h in response.headers)


@pytest.mark.asyncio
async def test_verified_identity_reaches_the_handler(node: Node) -> None:
    response = await send(node, ours(node.agent, "POST", body=b'{"hello": "world"}'))
    assert response.status_code == 200
    assert response.json() == {
        "scheme": "aauth", "sub": "darkmesh-node@node_a", "node_id": "node_a",
        "capabilities": ["node.query"], "body": '{"hello": "world"}',
    }


@pytest.mark.asyncio
async def test_empty_registry_is_503(make_node: Callable[..., Any], tmp_path: Any) -> None:
    agent = new_agent()
    node = await make_node([agent], auth_mode="either", node_key="k" * 24)
    node.registry.write_text('{"version": 1, "agents": []}')
    response = await send(node, ours(agent))
    assert response.status_code == 503
    assert response.json()["detail"] == "AAuth not available: trust registry empty"


@pytest.mark.asyncio
@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
async def test_both_algorithms_accepted(make_node: Callable[..., Any], alg: str) -> None:
    agent = new_agent(alg, capabilities=("node.query",))  # type: ignore[arg-type]
    node = await make_node([agent])
    for method, body in (("GET", b""), ("POST", b'{"x": [1, 2]}')):
        response = await send(node, ours(agent, method, url=ECHO + "?a=1&b=%2F", body=body))
        assert response.status_code == 200, response.text


@pytest.mark.asyncio
async def test_tampering_with_a_covered_part_is_refused(node: Node) -> None:
    agent = node.agent
    base = ours(agent, "POST", url=ECHO + "?q=1", body=b'{"n": 1}')
    tampered = [
        ({**base, "method": "GET"}, "signature_invalid"),
        ({**base, "url": ECHO.replace("echo/echo", "echo/ech%6F") + "?q=1"},
         "signature_invalid"),
        ({**base, "url": ECHO + "?q=2"}, "signature_invalid"),
        ({**base, "body": b'{"n": 2}'}, "content_digest_mismatch"),
        (with_headers(dict(base), **{"Content-Digest": content_digest(b'{"n": 2}')}),
         "content_digest_mismatch"),
        # body and digest swapped together: the digest is covered by the signature
        ({**with_headers(dict(base), **{"Content-Digest": content_digest(b'{"n": 2}')}),
          "body": b'{"n": 2}'}, "signature_invalid"),
    ]
    for spec, reason in tampered:  # each alone would be refused
        response = await send(node, spec)
        assert response.status_code == 401, response.text
        assert response.json()["reason"] == reason
    assert (await send(node, base)).status_code == 200
