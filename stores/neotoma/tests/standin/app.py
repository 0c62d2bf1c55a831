"""A Neotoma 0.22.0 stand-in, written from ``neotoma.md`` §7 (a Starlette app).

Configured through the constructor only (never extra HTTP routes Darkmesh could come to
depend on): profile ``dev``/``strict``, Bearer token, authority (default
``localhost:<port>``), injectable clock, admission cache TTL (5 s) and the guest access
policy per entity type (default ``closed``). Tests reach its state through Python
attributes, for assertions only.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from standin import httpsig
from standin.entities import (
    OBSERVATION_SOURCES,
    Entity,
    EntityStore,
    decode_cursor,
    encode_cursor,
)
from standin.errors import StandinError
from standin.grants import GrantRegistry, allows, iso

VERSION = "0.22.0"
BEARER_USER = "00000000-0000-0000-0000-000000000000"
LOCAL_USER = BEARER_USER  # dev loopback acts as the same local user
STORE_FIELDS = sorted([
    "commit", "entities", "external_actor", "file_content", "file_idempotency_key",
    "file_path", "idempotency_key", "interpretation", "mime_type", "observation_source",
    "original_filename", "relationships", "source_peer_id", "source_priority",
    "source_storage", "strict", "user_id",
])
GUEST_READ = {"read_only", "open", "submitter_scoped"}
GUEST_WRITE = {"submit_only", "open", "submitter_scoped"}
POLICY_MODES = {"closed", "read_only", "submit_only", "submitter_scoped", "open"}
AUTH_HINT = ("AAuth-signed agents can authenticate without Bearer once an active agent_grant "
             "matches their identity. Create a grant via Inspector → Agents → Grants.")
PROTECTED_HINT = ('Protected entity_type "agent_grant" can only be written by a '
                  "user-authenticated session or by an admitted agent with the matching grant "
                  "capability. This request was not admitted; create a grant in Inspector → "
                  "Agents → Grants first.")


def auth_required() -> StandinError:
    return StandinError(401, "AUTH_REQUIRED", "Missing Bearer token",
                        {"hint": AUTH_HINT, "sandbox": {"available": False}})


@dataclass(kw_only=True)
class Caller:
    """Who a request is, before route-specific rules."""

    bearer_ok: bool
    signature_present: bool
    identity: httpsig.SignedIdentity | None  # verified signer, admitted or not
    signature_error: str | None
    grant: dict[str, Any] | None
    admission_reason: str

    @property
    def admitted(self) -> bool:
        return self.grant is not None

    def attribution(self) -> dict[str, Any]:
        """What an observation written by this caller records about its writer."""
        out: dict[str, Any] = {
            "tier": "software" if self.identity is not None else "anonymous",
            "bearer": self.bearer_ok,
            "admitted": self.admitted,
        }
        if self.identity is not None:
            out.update(agent_thumbprint=self.identity.thumbprint, agent_sub=self.identity.sub,
                       agent_iss=self.identity.iss)
        if self.grant is not None:
            out.update(grant_id=self.grant["grant_id"], agent_label=self.grant["label"])
        return out

    def label(self, client_name: str | None = None) -> str:
        if self.grant is not None:
            return str(self.grant["label"])
        if self.identity is not None:
            if self.identity.sub:
                return self.identity.sub
            return f"thumb:{self.identity.thumbprint[:12]}"
        return client_name or "anonymous"


class NeotomaStandin:
    """Build with the settings, then serve :attr:`app` (see :mod:`standin.server`)."""

    def __init__(
        self,
        *,
        port: int,
        profile: Literal["dev", "strict"] = "dev",
        bearer_token: str | None = None,
        authority: str | None = None,
        clock: Callable[[], float] = time.time,
        admission_cache_ttl: float = 5.0,
        access_policies: Mapping[str, str] | None = None,
        admission_disabled: bool = False,
    ) -> None:
        if profile not in ("dev", "strict"):
            raise ValueError("profile must be dev or strict")
        if profile == "strict" and not bearer_token:
            raise ValueError("the strict profile needs a bearer token (NEOTOMA_BEARER_TOKEN)")
        for mode in (access_policies or {}).values():
            if mode not in POLICY_MODES:
                raise ValueError(f"unknown access policy {mode!r}")
        self.port = port
        self.profile = profile
        self.bearer_token = bearer_token
        self.authority = authority or f"localhost:{port}"
        self.clock = clock
        self.access_policies = dict(access_policies or {})
        self.grants = GrantRegistry(clock, admission_cache_ttl, admission_disabled)
        self.entities = EntityStore(clock)
        self.idempotency: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        #: Every request seen: (method, path, headers) — for assertions in tests.
        self.requests: list[dict[str, Any]] = []
        #: Test-side fault injection: answer every request with this status (e.g. 503).
        self.fail_with: int | None = None
        self.app = Starlette(routes=self._routes())

    # ------------------------------------------------------------------- glue

    def _routes(self) -> list[Route]:
        return [
            Route("/health", self._wrap(self.health), methods=["GET"]),
            Route("/.well-known/aauth-resource.json", self._wrap(self.well_known),
                  methods=["GET"]),
            Route("/session", self._wrap(self.session), methods=["GET"]),
            Route("/entities/query", self._wrap(self.entities_query), methods=["POST"]),
            Route("/entities", self._wrap(self.entities_route),
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/entities/{entity_id}", self._wrap(self.entity_get), methods=["GET"]),
            Route("/entities/{entity_id}/{sub:str}", self._wrap(self.entity_sub),
                  methods=["GET"]),
            Route("/store", self._wrap(self.store), methods=["POST"]),
            Route("/agents/grants", self._wrap(self.grants_collection), methods=["GET", "POST"]),
            Route("/agents/grants/{grant_id}", self._wrap(self.grant_item),
                  methods=["GET", "PATCH"]),
            Route("/agents/grants/{grant_id}/{action}", self._wrap(self.grant_action),
                  methods=["POST"]),
        ]

    def _wrap(self, handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.requests.append({
                "method": request.method, "path": request.url.path,
                "query": request.url.query, "headers": dict(request.headers), "body": body,
            })
            if self.fail_with is not None:
                return JSONResponse({"error_code": "UNAVAILABLE", "message": "stand-in outage",
                                     "timestamp": self.now_iso()}, status_code=self.fail_with)
            try:
                return await handler(request, body)  # type: ignore[no-any-return]
            except StandinError as exc:
                return JSONResponse(exc.body(self.now_iso()), status_code=exc.status)

        return endpoint

    def now_iso(self) -> str:
        return iso(self.clock())

    @staticmethod
    def _json(body: bytes) -> Any:
        if not body:
            return {}
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StandinError(400, "VALIDATION_ERROR", "Request body is not valid JSON.") from exc

    def policy(self, entity_type: str) -> str:
        return self.access_policies.get(entity_type, "closed")

    # ------------------------------------------------------------------- auth

    def identify(self, request: Request, body: bytes) -> Caller:
        """Bearer, then signature (fail-open in dev), then admission (§1.1, §1.5)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        bearer_ok = False
        authz = headers.get("authorization", "")
        if authz:
            token = authz[7:].strip() if authz.lower().startswith("bearer ") else None
            if not self.bearer_token or token != self.bearer_token:
                raise StandinError(401, "AUTH_INVALID",
                                   "Unauthorized - invalid authentication token")
            bearer_ok = True
        present = httpsig.is_signed(headers)
        identity: httpsig.SignedIdentity | None = None
        error: str | None = None
        if present:
            try:
                identity = httpsig.verify(
                    method=request.method, path=request.scope.get("raw_path", b"").decode(
                        "latin-1").split("?", 1)[0] or request.url.path,
                    query=request.scope.get("query_string", b"").decode("latin-1"),
                    headers=headers, body=body, authority=self.authority, now=self.clock(),
                )
            except httpsig.SignatureRejected as exc:
                if self.profile == "strict":
                    message = {"token": "AAuth agent token rejected",
                               "crash": "AAuth verification error"}.get(
                        exc.kind, "AAuth signature verification failed")
                    raise StandinError(401, "AAUTH_SIGNATURE_INVALID", message,
                                       {"reason": exc.code}) from exc
                error = exc.code  # dev: fail-open, counted as unsigned
        grant = None
        reason = "not_signed"
        if identity is not None:
            admission = self.grants.admit(identity)
            grant, reason = admission.grant, admission.reason
        return Caller(bearer_ok=bearer_ok, signature_present=present, identity=identity,
                      signature_error=error, grant=grant, admission_reason=reason)

    def user_of(self, caller: Caller) -> str:
        """The user a generally authenticated route (reads, session) acts as."""
        if caller.grant is not None:
            return str(caller.grant["user_id"])
        if caller.bearer_ok:
            return BEARER_USER
        if self.profile == "dev":
            return LOCAL_USER
        raise auth_required()

    # ----------------------------------------------------------------- public

    async def health(self, request: Request, body: bytes) -> Response:
        return JSONResponse({"ok": True, "version": VERSION})

    async def well_known(self, request: Request, body: bytes) -> Response:
        return JSONResponse({
            "issuer": f"https://{self.authority}", "client_name": "Neotoma",
            "signature_window": 60, "supported_algs": ["ES256", "EdDSA"],
            "supported_typ": ["aa-agent+jwt"], "jwks_uri": None,
            "jwks_uri_reason": "Neotoma is verifier-only; agent JWKs are conveyed per-request "
                               "via the Signature-Key header (with thumbprint binding via the "
                               "jkt claim).",
        })

    # ---------------------------------------------------------------- session

    async def session(self, request: Request, body: bytes) -> Response:
        caller = self.identify(request, body)
        user_id = self.user_of(caller)
        decision: dict[str, Any] = {
            "signature_present": caller.signature_present,
            "signature_verified": caller.identity is not None,
            "resolved_tier": "software" if caller.identity is not None else "anonymous",
            "attestation": {"verified": False, "format": "unknown", "reason": "not_present"},
        }
        if caller.signature_error is not None:
            decision["signature_error_code"] = caller.signature_error
        attribution: dict[str, Any] = {
            "tier": "software" if caller.identity is not None else "anonymous",
            "decision": decision,
        }
        if caller.identity is not None:
            attribution.update({
                "agent_thumbprint": caller.identity.thumbprint,
                "agent_sub": caller.identity.sub, "agent_iss": caller.identity.iss,
                "agent_public_key": json.dumps(caller.identity.public_jwk),
            })
        aauth: dict[str, Any] = {
            "verified": caller.identity is not None, "admitted": caller.admitted,
            "grant_id": caller.grant["grant_id"] if caller.grant else None,
            "admission_reason": caller.admission_reason,
        }
        if caller.grant is not None:
            aauth["agent_label"] = caller.grant["label"]
        origin = f"http://127.0.0.1:{self.port}"
        return JSONResponse({
            "user_id": user_id, "attribution": attribution, "aauth": aauth,
            "policy": {"anonymous_writes": "allow"},
            "eligible_for_trusted_writes": caller.admitted,
            "origins": {"app_origin": origin, "inspector_origin": origin, "source": "request"},
        })

    # ----------------------------------------------------------------- reads

    def _list(self, user_id: str, params: dict[str, Any]) -> dict[str, Any]:
        issues: list[dict[str, Any]] = []

        def as_int(name: str, default: int) -> int:
            value = params.get(name, default)
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                issues.append({"path": [name], "message": f"{name} must be a non-negative "
                               "integer"})
                return default
            return value

        def as_bool(name: str, default: bool) -> bool:
            value = params.get(name, default)
            if value in ("true", "false"):
                return value == "true"
            if not isinstance(value, bool):
                issues.append({"path": [name], "message": f"{name} must be a boolean"})
                return default
            return value

        limit = as_int("limit", 100)
        offset = as_int("offset", 0)
        include = as_bool("include_snapshots", True)
        cursor = params.get("cursor")
        sort_order = params.get("sort_order", "asc")
        if sort_order not in ("asc", "desc"):
            issues.append({"path": ["sort_order"], "message": "sort_order must be asc or desc"})
        if include and limit > 500:
            issues.append({"path": ["limit"], "message": "limit must be at most 500 when "
                           "include_snapshots is true"})
        if offset > 2000:
            issues.append({"path": ["offset"], "message": "offset must be at most 2000; use "
                           "cursor for deep pagination"})
        if cursor is not None:
            if not isinstance(cursor, str):
                issues.append({"path": ["cursor"], "message": "cursor must be a string"})
            if params.get("search") or params.get("snapshot_filters") or offset:
                issues.append({"path": ["cursor"], "message": "cursor cannot be combined with "
                               "search, snapshot_filters or a non-zero offset"})
        if issues:
            raise StandinError(400, "VALIDATION_INVALID_FORMAT", "Invalid request payload.",
                               {"issues": issues})
        types: list[str] | None = None
        if isinstance(params.get("entity_type"), str) and params["entity_type"]:
            types = [params["entity_type"]]
        elif isinstance(params.get("entity_types"), list):
            types = [t for t in params["entity_types"] if isinstance(t, str)]
        rows = self.entities.listing(user_id, types)
        if sort_order == "desc":
            rows.reverse()
        if isinstance(cursor, str):
            after = decode_cursor(cursor, sort_order)
            rows = [r for r in rows if (r.entity_id > after if sort_order == "asc"
                                        else r.entity_id < after)]
            start = 0
        else:
            start = offset
        total = len(rows)
        page = rows[start:start + limit] if limit else []
        out: dict[str, Any] = {
            "entities": [e.to_json(include) for e in page], "total": total, "limit": limit,
            "offset": offset, "search_mode": "none",
        }
        if page and start + len(page) < len(rows):
            out["next_cursor"] = encode_cursor(page[-1].entity_id, sort_order)
        return out

    async def entities_query(self, request: Request, body: bytes) -> Response:
        caller = self.identify(request, body)
        user_id = self.user_of(caller)
        data = self._json(body)
        if not isinstance(data, dict):
            raise StandinError(400, "VALIDATION_INVALID_FORMAT", "Invalid request payload.",
                               {"issues": [{"path": [], "message": "body must be an object"}]})
        return JSONResponse(self._list(user_id, data))

    async def entities_route(self, request: Request, body: bytes) -> Response:
        if request.method != "GET":
            raise StandinError(
                404, "RESOURCE_NOT_FOUND", f"No {request.method} route on /entities.",
                {"supported": ["GET /entities", "POST /entities/query"],
                 "hint": "List entities with GET /entities or POST /entities/query."},
            )
        caller = self.identify(request, body)
        user_id = self.user_of(caller)
        return JSONResponse(self._list(user_id, dict(request.query_params)))

    def _guest_denied(self, op: str, entity_type: str) -> StandinError:
        mode = self.policy(entity_type)
        return StandinError(403, "access_policy_denied",
                            f'Access policy "{mode}" for entity_type "{entity_type}" denies '
                            f'"{op}" for guest callers.',
                            {"code": "access_policy_denied", "op": op, "entity_type": entity_type,
                             "mode": mode, "reason": "entity_type_closed",
                             "hint": "Read entities through GET /entities or POST "
                                     "/entities/query as an admitted agent or user."})

    def _single_entity(self, request: Request, body: bytes) -> Entity:
        """The entity a single-entity read names, as the caller may see it (or a 403/404)."""
        caller = self.identify(request, body)
        entity_id = request.path_params["entity_id"]
        if caller.identity is not None:
            # §1.4 quirk 4: a signed single-entity read runs as a guest, even admitted.
            entity = next((e for e in self.entities.entities.values()
                           if e.entity_id == entity_id), None)
            entity_type = entity.entity_type if entity else "contact"
            if self.policy(entity_type) not in GUEST_READ:
                raise self._guest_denied("retrieve", entity_type)
        else:
            entity = self.entities.get(self.user_of(caller), entity_id)
        if entity is None:
            raise StandinError(404, "RESOURCE_NOT_FOUND", f"Entity not found: {entity_id}")
        return entity

    async def entity_get(self, request: Request, body: bytes) -> Response:
        return JSONResponse(self._single_entity(request, body).to_json())

    async def entity_sub(self, request: Request, body: bytes) -> Response:
        sub = request.path_params["sub"]
        if sub not in ("observations", "relationships", "html"):
            raise StandinError(404, "RESOURCE_NOT_FOUND", f"No route {request.url.path}")
        entity = self._single_entity(request, body)
        if sub == "observations":
            return JSONResponse({"observations": [
                {"observation_id": o.observation_id, "fields": o.fields,
                 "source_priority": o.source_priority,
                 "observation_source": o.observation_source, "observed_at": iso(o.observed_at)}
                for o in entity.observations]})
        if sub == "relationships":
            return JSONResponse({"relationships": []})
        return Response(f"<h1>{entity.canonical_name}</h1>", media_type="text/html")

    # ----------------------------------------------------------------- store

    def _validate_store(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise StandinError(400, "VALIDATION_ERROR", "Request body must be a JSON object.")
        unknown = sorted(set(data) - set(STORE_FIELDS))
        if unknown:
            raise StandinError(
                400, "ERR_UNKNOWN_FIELD",
                "Request body contains field(s) not declared by POST /store.",
                {"unknown_fields": unknown, "json_paths": [f"$.{k}" for k in unknown],
                 "allowed_fields": STORE_FIELDS, "operation": "POST /store"},
            )
        entities = data.get("entities")
        if entities is not None:
            if not isinstance(entities, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("entity_type"), str)
                    and e["entity_type"] for e in entities):
                raise StandinError(400, "VALIDATION_ERROR",
                                   "entities must be an array of objects with an entity_type")
            key = data.get("idempotency_key")
            if not isinstance(key, str) or not key:
                raise StandinError(400, "VALIDATION_ERROR",
                                   "idempotency_key is required when entities are provided")
        priority = data.get("source_priority", 100)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise StandinError(400, "VALIDATION_ERROR", "source_priority must be an integer")
        source = data.get("observation_source", "llm_summary")
        if source not in OBSERVATION_SOURCES:
            raise StandinError(400, "VALIDATION_ERROR",
                               "observation_source must be one of: "
                               + "|".join(OBSERVATION_SOURCES))
        relationships = data.get("relationships", [])
        if not isinstance(relationships, list):
            raise StandinError(400, "VALIDATION_ERROR", "relationships must be an array")
        return data

    def _store_user(self, caller: Caller, types: list[str], relationships: list[Any]) -> str:
        """Who writes, or the §2.5 500 denial."""
        if caller.grant is not None:
            label = str(caller.grant["label"])
            for entity_type in types:
                if not allows(caller.grant, "store", entity_type):
                    raise StandinError(500, "DB_QUERY_FAILED", f'Agent "{label}" is not '
                                       f'permitted to store entity_type "{entity_type}".')
                if relationships and not allows(caller.grant, "create_relationship",
                                                entity_type):
                    raise StandinError(500, "DB_QUERY_FAILED", f'Agent "{label}" is not '
                                       f'permitted to store entity_type "{entity_type}".')
            return str(caller.grant["user_id"])
        if caller.identity is not None:
            # A verified signer that is not admitted is a guest, in both profiles,
            # with or without Bearer.
            for entity_type in types:
                if self.policy(entity_type) not in GUEST_WRITE:
                    raise StandinError(
                        500, "DB_QUERY_FAILED",
                        f'Access policy "{self.policy(entity_type)}" for entity_type '
                        f'"{entity_type}" denies "store" for guest callers.')
            return LOCAL_USER
        return self.user_of(caller)

    async def store(self, request: Request, body: bytes) -> Response:
        caller = self.identify(request, body)
        data = self._validate_store(self._json(body))
        entities: list[dict[str, Any]] = data.get("entities") or []
        types = sorted({str(e["entity_type"]) for e in entities})
        user_id = self._store_user(caller, types, data.get("relationships") or [])
        key = data.get("idempotency_key")
        content = hashlib.sha256(json.dumps(
            {k: v for k, v in data.items() if k != "idempotency_key"}, sort_keys=True,
            separators=(",", ":")).encode()).hexdigest()
        if isinstance(key, str) and (user_id, key) in self.idempotency:
            seen_hash, answer = self.idempotency[(user_id, key)]
            if seen_hash != content:
                raise StandinError(
                    400, "ERR_IDEMPOTENCY_MISMATCH",
                    f'ERR_IDEMPOTENCY_MISMATCH: idempotency_key "{key}" was already used with '
                    "different content. Use a new idempotency_key for a different payload.",
                    envelope="error",
                    hint="Each unique payload must use a unique idempotency_key. To update an "
                         "entity, omit the idempotency_key or use a new one.")
            return JSONResponse({**answer, "replayed": True, "entities_created": 0,
                                 "observations_created": 0})
        commit = data.get("commit", True) is not False
        priority = int(data.get("source_priority", 100))
        source = str(data.get("observation_source", "llm_summary"))
        results: list[dict[str, Any]] = []
        warnings: list[dict[str, Any]] = []
        created = 0
        if commit:
            for index, submitted in enumerate(entities):
                entity, action, rule, obs, found = self.entities.upsert(
                    user_id, submitted, source_priority=priority, observation_source=source,
                    attribution=caller.attribution())
                created += action == "created"
                for warning in found:
                    warnings.append({**warning, "observation_index": index})
                org = submitted.get("organization")
                if entity.entity_type == "contact" and isinstance(org, str) and org.strip():
                    self.entities.upsert(user_id, {"entity_type": "company", "name": org},
                                         source_priority=priority, observation_source=source,
                                         attribution=caller.attribution())
                snapshot, _, _ = entity.reduce()
                results.append({
                    "entity_id": entity.entity_id, "entity_type": entity.entity_type,
                    "observation_id": obs.observation_id, "observation_index": index,
                    "action": action, "canonical_name": entity.canonical_name,
                    "resolver_path": [rule], "identity_basis": rule.split(":", 1)[0],
                    "identity_rule": rule, "entity_snapshot_after": snapshot,
                })
        answer = {
            "success": True, "replayed": False, "commit": commit, "source_id": str(uuid.uuid4()),
            "entities_created": created, "observations_created": len(results),
            "entities": results, "relationships_created": [], "store_warnings": warnings,
        }
        if commit and isinstance(key, str):
            self.idempotency[(user_id, key)] = (content, answer)
        return JSONResponse(answer)

    # ---------------------------------------------------------------- grants

    def _grant_user(self, caller: Caller, *, write: bool, op: str) -> str:
        if caller.identity is not None:
            if caller.grant is None:
                if write:
                    raise StandinError(403, "CAPABILITY_DENIED", PROTECTED_HINT,
                                       {"code": "capability_denied", "op": op,
                                        "entity_type": "agent_grant", "hint": PROTECTED_HINT})
            elif write and not allows(caller.grant, op, "agent_grant", exact=True):
                label = caller.grant["label"]
                hint = (f'Admitted agent "{label}" has no "{op}" capability for entity_type '
                        f'"agent_grant". Edit the grant in Inspector → Agents → Grants and add '
                        f'{{ op: "{op}", entity_types: ["agent_grant"] }}.')
                raise StandinError(403, "CAPABILITY_DENIED", hint,
                                   {"code": "capability_denied", "op": op,
                                    "entity_type": "agent_grant", "agent_label": label,
                                    "hint": hint})
        return self.user_of(caller)

    async def grants_collection(self, request: Request, body: bytes) -> Response:
        caller = self.identify(request, body)
        if request.method == "GET":
            user_id = self._grant_user(caller, write=False, op="retrieve")
            status = request.query_params.get("status", "all")
            if status not in ("active", "suspended", "revoked", "all"):
                raise StandinError(400, "VALIDATION_INVALID_FORMAT", "Invalid request payload.",
                                   {"issues": [{"path": ["status"], "message":
                                                "status must be active|suspended|revoked|all"}]})
            q = request.query_params.get("q", "")
            return JSONResponse({"grants": self.grants.list(user_id, status, q)})
        user_id = self._grant_user(caller, write=True, op="store_structured")
        data = self._json(body)
        if not isinstance(data, dict):
            raise StandinError(400, "AGENT_GRANT_INVALID", "Grant body must be an object",
                               {"code": "agent_grant_invalid"})
        return JSONResponse({"grant": self.grants.create(user_id, data)}, status_code=201)

    async def grant_item(self, request: Request, body: bytes) -> Response:
        caller = self.identify(request, body)
        grant_id = request.path_params["grant_id"]
        if request.method == "GET":
            user_id = self._grant_user(caller, write=False, op="retrieve")
            return JSONResponse({"grant": dict(self.grants.get(user_id, grant_id, route="get"))})
        user_id = self._grant_user(caller, write=True, op="correct")
        data = self._json(body)
        if not isinstance(data, dict):
            raise StandinError(400, "AGENT_GRANT_INVALID", "Grant body must be an object",
                               {"code": "agent_grant_invalid"})
        return JSONResponse({"grant": self.grants.patch(user_id, grant_id, data)})

    async def grant_action(self, request: Request, body: bytes) -> Response:
        action = request.path_params["action"]
        if action not in ("suspend", "revoke", "restore"):
            raise StandinError(404, "RESOURCE_NOT_FOUND", f"No route {request.url.path}")
        caller = self.identify(request, body)
        user_id = self._grant_user(caller, write=True, op="correct")
        return JSONResponse({"grant": self.grants.transition(
            user_id, request.path_params["grant_id"], action)})
