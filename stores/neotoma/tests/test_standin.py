"""The stand-in's own behaviours: one test per ``neotoma.md`` §7 checklist item."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from conftest import STRICT_TOKEN, FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from neotoma_testsigner import TestKey, make_jwt, sign_request
from standin import StandinServer, httpsig

SUB = "darkmesh-node@node_b"
ISS = "https://darkmesh.local"


def send(
    server: StandinServer, method: str, path: str, *, key: TestKey | None = None,
    jwt: str | None = None, body: Any = None, query: str = "", authority: str | None = None,
    bearer: str | None = None, headers: dict[str, str] | None = None, **sign_options: Any,
) -> httpx.Response:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = dict(headers or {})
    if raw:
        headers["content-type"] = "application/json"
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    if key is not None:
        token = jwt or make_jwt(key, sub=SUB, iss=ISS, exp=int(time.time()) + 300)
        headers = sign_request(method=method, path=path, query=query, body=raw, headers=headers,
                               key=key, jwt=token,
                               authority=authority or server.neotoma.authority, **sign_options)
    url = server.url + path + (f"?{query}" if query else "")
    return httpx.request(method, url, content=raw or None, headers=headers, timeout=10)


def session(server: StandinServer, key: TestKey | None = None, **kw: Any) -> dict[str, Any]:
    response = send(server, "GET", "/session", key=key, **kw)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def create_grant(server: StandinServer, bearer: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"label": "Darkmesh node", "capabilities": [
        {"op": "store_structured", "entity_types": ["warm_intro_reveal"]}], **fields}
    response = send(server, "POST", "/agents/grants", body=body, bearer=bearer)
    assert response.status_code == 201, response.text
    return response.json()["grant"]  # type: ignore[no-any-return]


def store_body(key: str, *entities: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "entities": list(entities), **extra}


# ----------------------------------------------------------- auth and signatures


def test_unsigned_and_bearer(standin: StandinServer, strict_standin: StandinServer) -> None:
    assert session(standin)["aauth"]["admission_reason"] == "not_signed"
    denied = send(strict_standin, "GET", "/session")
    assert denied.status_code == 401
    body = denied.json()
    assert body["error_code"] == "AUTH_REQUIRED" and body["message"] == "Missing Bearer token"
    assert "agent_grant" in body["details"]["hint"]
    assert body["details"]["sandbox"] == {"available": False}
    wrong = send(strict_standin, "GET", "/session", bearer="nope")
    assert wrong.status_code == 401 and wrong.json()["error_code"] == "AUTH_INVALID"
    assert send(standin, "GET", "/session", bearer="nope").json()["error_code"] == "AUTH_INVALID"
    ok = send(strict_standin, "GET", "/session", bearer=STRICT_TOKEN)
    assert ok.status_code == 200 and ok.json()["user_id"].startswith("00000000")


def test_authority_is_configured_never_host(standin: StandinServer) -> None:
    key = TestKey.generate()
    assert standin.neotoma.authority == f"localhost:{standin.port}"
    good = session(standin, key)
    assert good["aauth"]["verified"] is True
    # Signed for the address the request really went to: refused against the default.
    loopback = session(standin, key, authority=f"127.0.0.1:{standin.port}")
    assert loopback["aauth"]["verified"] is False
    assert loopback["attribution"]["decision"]["signature_error_code"] == "signature_invalid"


def test_exactly_the_httpsig_checks(standin: StandinServer, clock: FakeClock) -> None:
    key = TestKey.generate()
    now = int(time.time())

    def verified(**kw: Any) -> tuple[bool, str | None]:
        data = session(standin, key, **kw)
        return data["aauth"]["verified"], data["attribution"]["decision"].get(
            "signature_error_code")

    # Not checked: the JWT's own signature, typ, exp presence.
    assert verified(jwt=make_jwt(key, sub=SUB, break_signature=True))[0]
    assert verified(jwt=make_jwt(key, sub=SUB, typ="JWT"))[0]
    assert verified(jwt=make_jwt(key, sub=SUB, exp=None))[0]
    # created ±60 s on the injected clock.
    clock.advance(120)
    ok, code = verified()
    assert not ok and code is not None and code.startswith(
        "Signature timestamp out of acceptable range (skew: 120s)")
    clock.advance(-120)
    assert verified(created=now - 50)[0]
    # exp < now − 60, judged on the injected clock.
    assert verified(jwt=make_jwt(key, sub=SUB, exp=now - 30))[0]
    assert verified(jwt=make_jwt(key, sub=SUB, exp=now - 61)) == (False, "jwt_expired")
    # Integer expires is rebuilt quoted: fails. Quoted keyid/alg/nonce pass.
    assert verified(params=f";created={now};expires={now + 60}") == (False, "signature_invalid")
    assert verified(params=f';created={now};keyid="{key.thumbprint}";alg="ed25519";nonce="n1"')[0]
    assert verified(params="") == (False, "Signature-Input missing required parameter: created")
    # signature-key must be covered.
    _, code = verified(components=["@method", "@authority", "@path"])
    assert code == "AAuth profile violation: signature-key must be in covered components"
    # Derived components as httpsig 1.4.0 rebuilds them.
    base = ["@method", "@authority", "@path"]
    assert not verified(components=[*base, "@query", "signature-key"], query="limit=5")[0]
    assert verified(components=[*base, "@query", "signature-key"], query="limit=5",
                    query_with_question_mark=False)[0]
    assert verified(components=[*base, "@request-target", "signature-key"], query="limit=5")[0]
    assert not verified(components=[*base, "@target-uri", "signature-key"],
                        target_scheme="http")[0]
    assert verified(components=[*base, "@target-uri", "signature-key"])[0]
    # Keys: Ed25519 and raw r‖s ES256 verify; DER fails.
    ec_key = TestKey.generate("ES256")
    assert session(standin, ec_key)["aauth"]["verified"] is True
    der = session(standin, ec_key, der=True)
    assert der["attribution"]["decision"]["signature_error_code"] == "signature_invalid"
    # Missing covered header and content-digest mismatch.
    assert verified(components=[*base, "x-custom", "signature-key"])[1] == (
        "Missing header for component: x-custom")
    bad_digest = send(standin, "POST", "/entities/query", key=key, body={"limit": 1},
                      headers={"content-digest": "sha-256=:AAAA:"})
    assert bad_digest.status_code == 200  # dev fail-open: served as unsigned
    no_cnf = make_jwt(key, sub=SUB, omit_cnf=True)
    assert verified(jwt=no_cnf) == (False, "JWT missing cnf.jwk claim")


def test_fail_open_in_dev_strict_in_strict(
    standin: StandinServer, strict_standin: StandinServer
) -> None:
    key = TestKey.generate()
    body = store_body("fail-open-1", {"entity_type": "note", "canonical_name": "n1", "text": "x"})
    wrong = f"127.0.0.1:{standin.port}"
    written = send(standin, "POST", "/store", key=key, body=body, authority=wrong)
    assert written.status_code == 200 and written.json()["entities_created"] == 1
    strict = send(strict_standin, "POST", "/store", key=key, body=body,
                  authority=f"127.0.0.1:{strict_standin.port}")
    assert strict.status_code == 401
    assert strict.json()["error_code"] == "AAUTH_SIGNATURE_INVALID"
    assert strict.json()["details"] == {"reason": "signature_invalid"}
    assert strict.json()["message"] == "AAuth signature verification failed"
    expired = send(strict_standin, "GET", "/session", key=key,
                   jwt=make_jwt(key, sub=SUB, exp=int(time.time()) - 600))
    assert expired.json()["message"] == "AAuth agent token rejected"


# ------------------------------------------------------------ admission, grants


def test_admission_scoring(standin: StandinServer) -> None:
    pinned, fresh, other = TestKey.generate(), TestKey.generate(), TestKey.generate()
    sub_grant = create_grant(standin, label="by sub", match_sub=SUB, match_iss=ISS,
                             match_thumbprint=pinned.thumbprint)
    # A fresh key claiming the sub/iss is admitted although the grant pins another key.
    data = session(standin, fresh)
    assert data["aauth"]["admitted"] and data["aauth"]["grant_id"] == sub_grant["grant_id"]
    tp_grant = create_grant(standin, label="by thumb", match_thumbprint=other.thumbprint)
    time.sleep(0.01)
    other_jwt = make_jwt(other, sub="someone-else", exp=int(time.time()) + 300)
    assert session(standin, other, jwt=other_jwt)["aauth"]["grant_id"] == tp_grant["grant_id"]
    # The thumbprint grant admits only its key.
    stranger = TestKey.generate()
    stranger_jwt = make_jwt(stranger, sub="someone-else", exp=int(time.time()) + 300)
    assert session(standin, stranger, jwt=stranger_jwt)["aauth"]["admission_reason"] == "no_match"
    # Score 3 beats score 2: the pinned key with the sub gets the thumbprint grant.
    both = create_grant(standin, label="pinned", match_thumbprint=fresh.thumbprint)
    assert both["grant_id"] != sub_grant["grant_id"]
    standin.neotoma.grants._cache.clear()
    assert session(standin, fresh)["aauth"]["agent_label"] == "pinned"


def test_suspension_and_revocation(standin: StandinServer, clock: FakeClock) -> None:
    key = TestKey.generate()
    grant = create_grant(standin, match_thumbprint=key.thumbprint)
    assert session(standin, key)["aauth"]["admitted"] is True
    assert send(standin, "POST", f"/agents/grants/{grant['grant_id']}/suspend").status_code == 200
    assert session(standin, key)["aauth"]["admission_reason"] == "no_match"
    clock.advance(6)
    assert send(standin, "POST", f"/agents/grants/{grant['grant_id']}/revoke").status_code == 200
    assert session(standin, key)["aauth"]["admission_reason"] == "no_match"
    listed = send(standin, "GET", "/agents/grants").json()["grants"]
    assert [g["last_used_at"] for g in listed] == [None]


def test_admission_cache_reproduces_both_lags(standin: StandinServer, clock: FakeClock) -> None:
    key = TestKey.generate()
    # Lag 1: a thumbprint-only grant created right after a probe.
    assert session(standin, key)["aauth"]["admission_reason"] == "no_match"
    grant = create_grant(standin, match_thumbprint=key.thumbprint)
    assert session(standin, key)["aauth"]["admission_reason"] == "no_match"
    clock.advance(5.5)
    assert session(standin, key)["aauth"]["admitted"] is True
    # Lag 2: a restore right after a suspend.
    gid = grant["grant_id"]
    send(standin, "POST", f"/agents/grants/{gid}/suspend")
    assert session(standin, key)["aauth"]["admission_reason"] == "no_match"
    send(standin, "POST", f"/agents/grants/{gid}/restore")
    assert session(standin, key)["aauth"]["admission_reason"] == "no_match"
    clock.advance(5.5)
    assert session(standin, key)["aauth"]["admitted"] is True


def test_session_shapes(standin: StandinServer, strict_standin: StandinServer) -> None:
    key = TestKey.generate()
    unsigned = session(standin)
    assert unsigned["aauth"] == {"verified": False, "admitted": False, "grant_id": None,
                                 "admission_reason": "not_signed"}
    assert unsigned["attribution"]["tier"] == "anonymous"
    no_match = session(standin, key)
    assert no_match["aauth"] == {"verified": True, "admitted": False, "grant_id": None,
                                 "admission_reason": "no_match"}
    bad = session(standin, key, authority="elsewhere:1")
    assert bad["aauth"]["verified"] is False
    assert bad["aauth"]["admission_reason"] == "not_signed"
    assert bad["attribution"]["decision"]["signature_present"] is True
    assert bad["attribution"]["decision"]["signature_verified"] is False
    assert bad["attribution"]["decision"]["signature_error_code"] == "signature_invalid"
    grant = create_grant(standin, label="Darkmesh node darkmesh-node@node_b",
                         match_thumbprint=key.thumbprint)
    standin.neotoma.grants._cache.clear()
    admitted = session(standin, key)
    assert admitted["aauth"]["agent_label"] == "Darkmesh node darkmesh-node@node_b"
    assert admitted["aauth"]["grant_id"] == grant["grant_id"]
    assert admitted["attribution"]["agent_thumbprint"] == key.thumbprint
    assert admitted["attribution"]["agent_sub"] == SUB
    assert admitted["eligible_for_trusted_writes"] is True
    strict = send(strict_standin, "GET", "/session", key=key)
    assert strict.status_code == 401 and strict.json()["error_code"] == "AUTH_REQUIRED"


def test_grant_routes(standin: StandinServer) -> None:
    def post(path: str, body: Any = None) -> httpx.Response:
        return send(standin, "POST", path, body=body)

    def invalid(body: dict[str, Any]) -> str:
        response = post("/agents/grants", body)
        assert response.status_code == 400
        assert response.json()["error_code"] == "AGENT_GRANT_INVALID"
        assert response.json()["details"]["code"] == "agent_grant_invalid"
        return str(response.json()["message"])

    caps = [{"op": "retrieve", "entity_types": ["contact"]}]
    assert invalid({"label": "x", "capabilities": caps}) == (
        "Grant must declare at least one of match_sub or match_thumbprint")
    assert invalid({"label": "x", "capabilities": caps, "match_thumbprint": "t",
                    "match_iss": "i"}) == (
        "match_iss requires match_sub (iss alone is not a valid identity)")
    assert invalid({"label": " ", "capabilities": caps, "match_sub": "s"}) == (
        "label is required and must be a non-empty string")
    assert invalid({"label": "x", "capabilities": "all", "match_sub": "s"}).startswith(
        "capabilities must be an array of { op, entity_types }")
    assert invalid({"label": "x", "capabilities": [{"op": "fly", "entity_types": ["a"]}],
                    "match_sub": "s"}).startswith("capabilities[0].op must be one of: store,")
    assert invalid({"label": "x", "capabilities": [{"op": "store", "entity_types": []}],
                    "match_sub": "s"}) == (
        "capabilities[0].entity_types must be a non-empty array of strings")
    assert invalid({"label": "x", "capabilities": caps, "match_sub": "s",
                    "status": "paused"}) == "status must be one of: active, suspended, revoked"

    grant = create_grant(standin, label="alpha", match_sub="agent@a", match_iss="https://i",
                         notes="n")
    gid = grant["grant_id"]
    patched = send(standin, "PATCH", f"/agents/grants/{gid}",
                   body={"match_thumbprint": "abc", "notes": None})
    assert patched.status_code == 200
    assert patched.json()["grant"]["notes"] is None
    assert patched.json()["grant"]["match_thumbprint"] == "abc"
    refused = send(standin, "PATCH", f"/agents/grants/{gid}", body={"status": "revoked"})
    assert refused.status_code == 400
    cleared = send(standin, "PATCH", f"/agents/grants/{gid}",
                   body={"match_sub": None, "match_iss": None})
    assert cleared.json()["grant"]["match_sub"] is None
    assert post(f"/agents/grants/{gid}/revoke").json()["grant"]["status"] == "revoked"
    illegal = post(f"/agents/grants/{gid}/suspend")
    assert illegal.status_code == 409
    assert illegal.json()["message"] == "Illegal grant status transition: revoked → suspended."
    assert illegal.json()["error_code"] == "AGENT_GRANT_STATUS_TRANSITION"
    missing = send(standin, "GET", "/agents/grants/ent_nope")
    assert missing.status_code == 404 and missing.json() ["error_code"] == "RESOURCE_NOT_FOUND"
    assert missing.json()["message"] == "Agent grant not found: ent_nope"
    missing_patch = send(standin, "PATCH", "/agents/grants/ent_nope", body={"label": "y"})
    assert missing_patch.json()["error_code"] == "AGENT_GRANT_NOT_FOUND"
    assert missing_patch.json()["message"] == "Agent grant ent_nope not found."
    create_grant(standin, label="beta", match_thumbprint="zzz")
    listed = send(standin, "GET", "/agents/grants", query="status=active").json()["grants"]
    assert [g["label"] for g in listed] == ["beta"]
    assert [g["label"] for g in send(standin, "GET", "/agents/grants",
                                     query="q=alp").json()["grants"]] == ["alpha"]
    # A verified signature on a grants write is refused unless admitted with agent_grant.
    key = TestKey.generate()
    signed = send(standin, "POST", "/agents/grants", key=key,
                  body={"label": "z", "capabilities": caps, "match_sub": "s"})
    assert signed.status_code == 403 and signed.json()["error_code"] == "CAPABILITY_DENIED"
    create_grant(standin, label="admin", match_thumbprint=key.thumbprint, capabilities=[
        {"op": "store_structured", "entity_types": ["agent_grant"]}])
    standin.neotoma.grants._cache.clear()
    allowed = send(standin, "POST", "/agents/grants", key=key,
                   body={"label": "z", "capabilities": caps, "match_sub": "s"})
    assert allowed.status_code == 201


# ------------------------------------------------------------------------ reads


def seed_contacts(server: StandinServer, count: int) -> None:
    entities = [{"entity_type": "contact", "name": f"Person {i:03d}",
                 "email": f"p{i:03d}@example.com"} for i in range(count)]
    response = send(server, "POST", "/store", body=store_body(f"seed-{count}", *entities))
    assert response.status_code == 200, response.text


def test_listing_shape(standin: StandinServer) -> None:
    seed_contacts(standin, 5)
    first = send(standin, "POST", "/entities/query",
                 body={"entity_type": "contact", "limit": 3}).json()
    assert set(first) == {"entities", "total", "limit", "offset", "search_mode", "next_cursor"}
    assert all("relationship_count" not in e for e in first["entities"])
    ids = [e["entity_id"] for e in first["entities"]]
    assert ids == sorted(ids)
    second = send(standin, "POST", "/entities/query",
                  body={"entity_type": "contact", "limit": 3,
                        "cursor": first["next_cursor"]}).json()
    assert len(second["entities"]) == 2 and "next_cursor" not in second
    bare = send(standin, "GET", "/entities",
                query="entity_type=contact&include_snapshots=false&limit=10").json()
    assert bare["entities"][0]["snapshot"] == {} and bare["entities"][0]["provenance"] == {}

    def error(body: dict[str, Any]) -> dict[str, Any]:
        response = send(standin, "POST", "/entities/query", body=body)
        assert response.status_code == 400
        return response.json()  # type: ignore[no-any-return]

    assert error({"limit": 501})["error_code"] == "VALIDATION_INVALID_FORMAT"
    assert error({"limit": 501})["message"] == "Invalid request payload."
    assert error({"offset": 2001})["details"]["issues"]
    assert error({"cursor": first["next_cursor"], "search": "x"})["error_code"] == (
        "VALIDATION_INVALID_FORMAT")
    assert error({"cursor": first["next_cursor"], "offset": 2})["error_code"] == (
        "VALIDATION_INVALID_FORMAT")
    assert error({"cursor": "%%%"})["error_code"] == "INVALID_CURSOR"
    assert error({"cursor": first["next_cursor"], "sort_order": "desc"})["error_code"] == (
        "INVALID_CURSOR")
    assert send(standin, "POST", "/entities/query",
                body={"limit": 1000, "include_snapshots": False}).status_code == 200
    wrong_verb = send(standin, "DELETE", "/entities")
    assert wrong_verb.status_code == 404
    assert wrong_verb.json()["details"]["supported"] == ["GET /entities", "POST /entities/query"]


def test_retrieve_not_enforced(standin: StandinServer) -> None:
    seed_contacts(standin, 2)
    key = TestKey.generate()
    create_grant(standin, match_thumbprint=key.thumbprint)  # store_structured only
    standin.neotoma.grants._cache.clear()
    assert session(standin, key)["aauth"]["admitted"] is True
    listed = send(standin, "POST", "/entities/query", key=key,
                  body={"entity_type": "contact", "limit": 10})
    assert listed.status_code == 200 and len(listed.json()["entities"]) == 2
    grants = send(standin, "GET", "/agents/grants", key=key)
    assert grants.status_code == 200 and len(grants.json()["grants"]) == 1


def test_signed_single_entity_reads(standin: StandinServer) -> None:
    seed_contacts(standin, 1)
    entity_id = send(standin, "POST", "/entities/query",
                     body={"entity_type": "contact"}).json()["entities"][0]["entity_id"]
    key = TestKey.generate()
    create_grant(standin, match_thumbprint=key.thumbprint,
                 capabilities=[{"op": "retrieve", "entity_types": ["contact"]}])
    standin.neotoma.grants._cache.clear()
    for suffix in ("", "/observations", "/relationships", "/html"):
        refused = send(standin, "GET", f"/entities/{entity_id}{suffix}", key=key)
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "access_policy_denied"
        assert refused.json()["message"] == ('Access policy "closed" for entity_type "contact" '
                                             'denies "retrieve" for guest callers.')
        assert refused.json()["details"]["reason"] == "entity_type_closed"
    unsigned = send(standin, "GET", f"/entities/{entity_id}")
    assert unsigned.status_code == 200 and unsigned.json()["entity_id"] == entity_id


# ----------------------------------------------------------------------- writes


def test_store_validation_and_replays(standin: StandinServer) -> None:
    unknown = send(standin, "POST", "/store", body={"foo": 1, "entities": []})
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "ERR_UNKNOWN_FIELD"
    assert unknown.json()["details"]["unknown_fields"] == ["foo"]
    assert "idempotency_key" in unknown.json()["details"]["allowed_fields"]
    no_key = send(standin, "POST", "/store", body={"entities": [{"entity_type": "note"}]})
    assert no_key.status_code == 400 and no_key.json()["error_code"] == "VALIDATION_ERROR"
    assert no_key.json()["message"] == "idempotency_key is required when entities are provided"
    body = store_body("k-replay", {"entity_type": "note", "canonical_name": "a", "v": 1})
    first = send(standin, "POST", "/store", body=body).json()
    assert first["replayed"] is False and first["entities_created"] == 1
    again = send(standin, "POST", "/store", body=body).json()
    assert again["replayed"] is True and again["entities_created"] == 0
    assert len(standin.neotoma.entities.entities) == 1
    only = next(iter(standin.neotoma.entities.entities.values()))
    assert len(only.observations) == 1
    other = store_body("k-replay", {"entity_type": "note", "canonical_name": "a", "v": 2})
    mismatch = send(standin, "POST", "/store", body=other)
    assert mismatch.status_code == 400
    assert mismatch.json()["error"]["code"] == "ERR_IDEMPOTENCY_MISMATCH"
    assert "hint" in mismatch.json()["error"]


def test_store_denials(standin: StandinServer, strict_standin: StandinServer) -> None:
    key = TestKey.generate()
    body = store_body("deny-1", {"entity_type": "contact", "name": "X"})
    create_grant(standin, label="Reveal writer", match_thumbprint=key.thumbprint)
    standin.neotoma.grants._cache.clear()
    denied = send(standin, "POST", "/store", key=key, body=body)
    assert denied.status_code == 500
    assert denied.json()["error_code"] == "DB_QUERY_FAILED"
    assert denied.json()["message"] == (
        'Agent "Reveal writer" is not permitted to store entity_type "contact".')
    rel = send(standin, "POST", "/store", key=key, body=store_body(
        "deny-2", {"entity_type": "warm_intro_reveal", "canonical_name": "r"},
        relationships=[{"type": "REFERS_TO"}]))
    assert rel.status_code == 500 and "not permitted" in rel.json()["message"]
    guest_message = ('Access policy "closed" for entity_type "contact" denies "store" for '
                     "guest callers.")
    stranger = TestKey.generate()
    for server, bearer in ((standin, None), (standin, "dev-token"),
                           (strict_standin, None), (strict_standin, STRICT_TOKEN)):
        guest = send(server, "POST", "/store", key=stranger, body=body, bearer=bearer)
        assert guest.status_code == 500, (server.neotoma.profile, bearer)
        assert guest.json()["message"] == guest_message


def test_identity_and_merging(standin: StandinServer) -> None:
    def store(key: str, entity: dict[str, Any]) -> dict[str, Any]:
        response = send(standin, "POST", "/store", body=store_body(key, entity))
        assert response.status_code == 200, response.text
        return response.json()["entities"][0]  # type: ignore[no-any-return]

    explicit = store("i1", {"entity_type": "warm_intro_reveal",
                            "canonical_name": "warm_intro_reveal:node_a:r1:c1:requester",
                            "request_id": "r1"})
    assert explicit["canonical_name"] == "warm_intro_reveal:node_a:r1:c1:requester"
    assert explicit["identity_rule"] == "name_key:canonical_name"
    assert explicit["entity_snapshot_after"]["canonical_name"] == explicit["canonical_name"]
    again = store("i2", {"entity_type": "warm_intro_reveal",
                         "canonical_name": "warm_intro_reveal:node_a:r1:c1:requester"})
    assert again["entity_id"] == explicit["entity_id"] and again["action"] == "matched_existing"
    a = store("i3", {"entity_type": "contact", "name": "Sam Lee", "email": "sam@a.com"})
    b = store("i4", {"entity_type": "contact", "name": "Sam Lee", "email": "sam@b.com"})
    assert a["entity_id"] == b["entity_id"] and b["identity_rule"] == "name_key:name"
    first = store("i5", {"entity_type": "warm_intro_reveal", "darkmesh_node_id": "node_b",
                         "request_id": "aaaa1111", "side": "responder"})
    second = store("i6", {"entity_type": "warm_intro_reveal", "darkmesh_node_id": "node_b",
                          "request_id": "bbbb2222", "side": "responder"})
    assert first["entity_id"] == second["entity_id"]  # heuristic collision (§3.3)
    assert second["action"] == "matched_existing"
    from standin.entities import entity_id_for

    assert a["entity_id"] == entity_id_for("contact", "Sam Lee")
    entity = standin.neotoma.entities.get("00000000-0000-0000-0000-000000000000", a["entity_id"])
    assert entity is not None and entity.to_json()["observation_count"] == 2


def test_reducer(standin: StandinServer, clock: FakeClock) -> None:
    def store(key: str, entity: dict[str, Any], **extra: Any) -> dict[str, Any]:
        response = send(standin, "POST", "/store", body=store_body(key, entity, **extra))
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    base = {"entity_type": "contact", "name": "Robin"}
    out = store("r1", {**base, "email": "robin@x.com", "phone": "1", "notes": "a",
                       "darkmesh_score": 9}, source_priority=50)
    assert [w["code"] for w in out["store_warnings"]] == ["UNKNOWN_FIELD"]
    clock.advance(1)
    out = store("r2", {**base, "notes": "b"})  # email omitted: kept
    snap = out["entities"][0]["entity_snapshot_after"]
    assert snap["email"] == "robin@x.com" and snap["notes"] == "b"
    assert "darkmesh_score" not in snap
    clock.advance(1)
    out = store("r3", {**base, "notes": None})  # last_write null clears silently
    assert "notes" not in out["entities"][0]["entity_snapshot_after"]
    assert out["store_warnings"] == []
    clock.advance(1)
    out = store("r4", {**base, "email": "low@x.com"}, source_priority=10)
    assert out["entities"][0]["entity_snapshot_after"]["email"] == "robin@x.com"
    clock.advance(1)
    out = store("r5", {**base, "phone": None}, source_priority=90)
    assert "phone" not in out["entities"][0]["entity_snapshot_after"]
    assert [w["code"] for w in out["store_warnings"]] == ["NULL_CLEARED_FIELD"]
    assert out["store_warnings"][0]["message"].startswith(
        'contact field "phone" was cleared by a null observation under `highest_priority`')
    entity = standin.neotoma.entities.entities[next(iter(standin.neotoma.entities.entities))]
    assert entity.observations[1].source_priority == 100
    assert entity.observations[1].observation_source == "llm_summary"


# ----------------------------------------------------------------------- public


def test_health(standin: StandinServer) -> None:
    assert send(standin, "GET", "/health").json() == {"ok": True, "version": "0.22.0"}


def test_well_known_issuer_is_https_authority(clock: FakeClock) -> None:
    with StandinServer(authority="neotoma.test:8443", clock=clock) as server:
        body = send(server, "GET", "/.well-known/aauth-resource.json").json()
    assert body["issuer"] == "https://neotoma.test:8443"
    assert body["supported_algs"] == ["ES256", "EdDSA"]
    assert body["jwks_uri"] is None and body["signature_window"] == 60


@pytest.mark.parametrize("profile", ["dev", "strict"])
def test_constructor_validates(profile: str) -> None:
    from standin import NeotomaStandin

    with pytest.raises(ValueError):
        NeotomaStandin(port=1, access_policies={"contact": "wide-open"})
    if profile == "strict":
        with pytest.raises(ValueError, match="bearer token"):
            NeotomaStandin(port=1, profile="strict")


def test_access_policy_per_type_is_a_constructor_setting(clock: FakeClock) -> None:
    with StandinServer(clock=clock, access_policies={"contact": "read_only",
                                                     "note": "submit_only"}) as server:
        seed_contacts(server, 1)
        entity_id = send(server, "POST", "/entities/query",
                         body={"entity_type": "contact"}).json()["entities"][0]["entity_id"]
        key = TestKey.generate()
        assert send(server, "GET", f"/entities/{entity_id}", key=key).status_code == 200
        guest_note = send(server, "POST", "/store", key=key, body=store_body(
            "guest-note", {"entity_type": "note", "canonical_name": "g", "text": "hi"}))
        assert guest_note.status_code == 200
        guest_contact = send(server, "POST", "/store", key=key, body=store_body(
            "guest-contact", {"entity_type": "contact", "name": "G"}))
        assert guest_contact.status_code == 500
        assert 'Access policy "read_only"' in guest_contact.json()["message"]


# ------------------------------------------------------- verifier, as a property

_PROPERTY_KEYS = {"Ed25519": TestKey.generate("Ed25519"), "ES256": TestKey.generate("ES256")}


@settings(max_examples=60, deadline=None)
@given(
    alg=st.sampled_from(["Ed25519", "ES256"]),
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE"]),
    path=st.from_regex(r"/[a-z0-9_/%-]{0,30}", fullmatch=True),
    query=st.from_regex(r"([a-z]{1,5}=[a-z0-9]{0,5}(&[a-z]{1,5}=[a-z0-9]{0,5}){0,2})?",
                        fullmatch=True),
    body=st.binary(max_size=200),
    flip=st.integers(min_value=0),
)
def test_signed_requests_verify_and_any_body_change_fails(
    alg: str, method: str, path: str, query: str, body: bytes, flip: int
) -> None:
    key = _PROPERTY_KEYS[alg]
    now = int(time.time())
    jwt = make_jwt(key, sub=SUB, exp=now + 300)
    headers = sign_request(method=method, path=path, query=query, body=body, key=key,
                           jwt=jwt, authority="localhost:3080", created=now)
    who = httpsig.verify(method=method, path=path, query=query, headers=headers, body=body,
                         authority="localhost:3080", now=now)
    assert who.thumbprint == key.thumbprint and who.sub == SUB
    with pytest.raises(httpsig.SignatureRejected):
        httpsig.verify(method=method, path=path, query=query, headers=headers, body=body,
                       authority="localhost:3081", now=now)
    if body:
        index = flip % len(body)
        tampered = body[:index] + bytes([body[index] ^ 1]) + body[index + 1:]
        with pytest.raises(httpsig.SignatureRejected, match="content-digest does not match"):
            httpsig.verify(method=method, path=path, query=query, headers=headers,
                           body=tampered, authority="localhost:3080", now=now)
