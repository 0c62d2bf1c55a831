"""The one auth guard of node and relay routes, and start-up validation of auth modes.

Every route declares its capability (or ``public`` / ``operator-session``). The guard:

1. reads the body under the route's cap (413 beyond it), keeping the raw bytes for the
   content digest and for the handler;
2. decides the scheme from the auth mode (``wire-v1.md`` §2.2, ``aauth.md`` §5):
   a signed request goes to the verifier only, never falling back to a shared key;
3. checks the capability on a verified request (403 naming it), or the shared key
   (node 401 ``invalid node key``, relay 403 ``invalid relay_key``), compared in
   constant time;
4. attaches :class:`sdl_core.Identity` as ``request.state.identity`` and calls the
   handler, turning :class:`sdl_core.HTTPProblem` into JSON and anything else into a
   logged 500 without a traceback.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from sdl_core.authority import authorities_from_url
from sdl_core.errors import HTTPProblem, StartupError, VerificationFailed
from sdl_core.http import parse_json_object, problem_response, read_capped_body, validation_response
from sdl_core.protocols import Identity, InboundRequest
from sdl_core.specs import OPERATOR_SESSION, PUBLIC, RouteSpec

if TYPE_CHECKING:
    from sdl_core.host import Host, RelayHost, Runtime

log = logging.getLogger("darkmesh.auth")

SIGNATURE_HEADERS = ("signature", "signature-input", "signature-key")
PEER_CAPABILITIES = frozenset({"node.callback.consent", "node.callback.reveal"})

Endpoint = Callable[[Request], Awaitable[Response]]


# ------------------------------------------------------------------ shared keys


def constant_time_equals(given: str, expected: str) -> bool:
    """Compare secrets in constant time; an empty configured secret never matches."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def key_from_headers(headers: Any) -> str:
    """``X-Darkmesh-Key`` (trimmed, non-empty) wins, else ``Authorization: Bearer``."""
    direct = (headers.get("x-darkmesh-key") or "").strip()
    if direct:
        return str(direct)
    authorization = headers.get("authorization") or ""
    if authorization[:7].lower() == "bearer ":
        return str(authorization[7:].strip())
    return ""


@dataclass(frozen=True, kw_only=True)
class SharedKeyRule:
    location: Literal["header", "body", "either"]
    status: int
    detail: str


NODE_KEY_RULE = SharedKeyRule(location="header", status=401, detail="invalid node key")
RELAY_BODY_RULE = SharedKeyRule(location="body", status=403, detail="invalid relay_key")
RELAY_HEADER_RULE = SharedKeyRule(location="header", status=403, detail="invalid relay_key")
RELAY_EITHER_RULE = SharedKeyRule(location="either", status=403, detail="invalid relay_key")


def is_peer_route(route: RouteSpec) -> bool:
    """Whether ``route`` is called by peers (peer key in hmac mode) rather than the operator."""
    return route.peer_route or route.capability in PEER_CAPABILITIES


def shared_secret(runtime: Runtime, route: RouteSpec) -> str:
    """The secret a shared-key caller must present for ``route``."""
    settings: Any = runtime.settings  # type: ignore[attr-defined]
    if runtime.role == "relay":
        return str(settings.key.get_secret_value())
    if is_peer_route(route):
        return str(settings.peer_key.get_secret_value())
    return str(settings.node_key.get_secret_value())


def shared_key_rule(runtime: Runtime, route: RouteSpec) -> SharedKeyRule:
    if runtime.role == "node":
        return NODE_KEY_RULE
    if route.path.startswith("/darkmesh/relay/mailbox"):
        return RELAY_EITHER_RULE
    return RELAY_BODY_RULE if "POST" in route.methods else RELAY_HEADER_RULE


# ------------------------------------------------------------------ authorities


def accepted_authorities(runtime: Runtime) -> list[str]:
    settings: Any = runtime.settings  # type: ignore[attr-defined]
    url = settings.public_url if runtime.role == "relay" else settings.listen_url
    return authorities_from_url(url)


# ------------------------------------------------------------------------ guard


def _is_signed(request: Request) -> bool:
    return any(h in request.headers for h in SIGNATURE_HEADERS)


def _inbound(request: Request, body: bytes) -> InboundRequest:
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw_path.decode("latin-1").split("?", 1)[0] or "/"
    query = request.scope.get("query_string", b"").decode("latin-1")
    headers = [
        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.scope["headers"]
    ]
    return InboundRequest(method=request.method.upper(), raw_path=path, query=query,
                          headers=headers, body=body)


def _replay_cache(runtime: Runtime) -> Callable[[str, float], Awaitable[bool]]:
    if runtime.role == "relay":
        backend = runtime.backend  # type: ignore[attr-defined]

        async def relay_once(key: str, ttl: float) -> bool:
            return bool(await backend.remember_once(key, ttl))

        return relay_once
    area = runtime.state("aauth-replay")  # type: ignore[attr-defined]

    async def node_once(key: str, ttl: float) -> bool:
        return bool(area.remember_once(key, ttl))

    return node_once


async def _verify(runtime: Runtime, request: Request, body: bytes, capability: str) -> Identity:
    verifier = runtime.verifier  # type: ignore[attr-defined]
    if verifier is None:
        raise HTTPProblem(503, "AAuth not available: no verifier installed")
    if not verifier.ready():
        raise HTTPProblem(503, "AAuth not available: trust registry empty")
    try:
        agent = await verifier.verify(
            _inbound(request, body),
            authorities=accepted_authorities(runtime),
            remember_once=_replay_cache(runtime),
        )
    except VerificationFailed as exc:
        runtime.metrics.verification_failures.labels(reason=exc.reason or "unknown").inc()
        raise
    identity = Identity(scheme="aauth", sub=agent.sub, node_id=agent.node_id,
                        capabilities=agent.capabilities, agent=agent)
    if not identity.allows(capability):
        raise HTTPProblem(
            403, f"agent '{agent.sub}' is not permitted to use capability '{capability}'",
            reason="capability_denied",
        )
    return identity


def _check_shared_key(
    runtime: Runtime, route: RouteSpec, request: Request, body: bytes
) -> Identity:
    rule = shared_key_rule(runtime, route)
    given = ""
    if rule.location in ("header", "either"):
        given = key_from_headers(request.headers)
    if not given and rule.location in ("body", "either"):
        # Check order upstream: body parsing (400) comes before the shared key (403).
        data = parse_json_object(body)
        candidate = data.get("relay_key")
        given = candidate if isinstance(candidate, str) else ""
    if not constant_time_equals(given, shared_secret(runtime, route)):
        raise HTTPProblem(rule.status, rule.detail, reason="invalid_shared_key")
    return Identity(scheme="shared-key", capabilities=frozenset({route.capability}))


async def authenticate(
    runtime: Runtime, route: RouteSpec, request: Request, body: bytes
) -> Identity:
    """Decide who the caller is for ``route`` (raises :class:`HTTPProblem`)."""
    if route.capability == PUBLIC:
        return Identity(scheme="public")
    if route.capability == OPERATOR_SESSION:
        # The dashboard checks its own session cookie and CSRF token in its handlers.
        return Identity(scheme="operator-session")
    mode = runtime.settings.auth_mode  # type: ignore[attr-defined]
    signed = _is_signed(request)
    if mode == "aauth" and not signed:
        raise HTTPProblem(401, "AAuth signature required", reason="signature_required",
                          headers={"Signature-Error": "error=invalid_request"})
    if signed and mode != "hmac":
        identity = await _verify(runtime, request, body, route.capability)
        runtime.metrics.auth_accepted.labels(scheme="aauth").inc()
        runtime.metrics.count_caller("aauth", identity.sub or "unknown")
        return identity
    identity = _check_shared_key(runtime, route, request, body)
    runtime.metrics.auth_accepted.labels(scheme="shared-key").inc()
    kind = "peer-key" if runtime.role == "node" and is_peer_route(route) else "key"
    runtime.metrics.count_caller("shared-key", kind)
    return identity


def guard(runtime: Runtime, route: RouteSpec, *, max_body_bytes: int) -> Endpoint:
    """Wrap ``route.endpoint`` with body capping, authentication and JSON errors."""
    limit = route.max_body_bytes or max_body_bytes
    endpoint = route.endpoint
    label = route.name or route.path

    async def guarded(request: Request) -> Response:
        status = 500
        try:
            body = await read_capped_body(request, limit)
            identity = await authenticate(runtime, route, request, body)
            replayed = _replaying_request(request, body)
            replayed.state.identity = identity
            replayed.state.body = body
            response: Response = await endpoint(replayed)
            status = response.status_code
            return response
        except HTTPProblem as problem:
            status = problem.status
            return problem_response(problem)
        except ValidationError as exc:
            status = 422
            return validation_response(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return problem_response(HTTPProblem(500, "internal error"))
        finally:
            runtime.metrics.http_requests.labels(route=label, status=str(status)).inc()

    guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
    return guarded


def _replaying_request(request: Request, body: bytes) -> Request:
    """A request whose body can be read again by the handler (we consumed the stream)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    new = Request(request.scope, receive)
    return new


def request_body(request: Request) -> bytes:
    """The raw body the guard read (the bytes the content digest covered)."""
    return bytes(getattr(request.state, "body", b""))


def request_identity(request: Request) -> Identity:
    """The :class:`Identity` the guard attached to ``request`` (public when none)."""
    return getattr(request.state, "identity", Identity(scheme="public"))


def node_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or 422 in FastAPI's shape (node routes)."""
    body = request_body(request)
    try:
        return parse_json_object(body, empty_is_object=False)
    except HTTPProblem as exc:
        raise HTTPProblem(
            422, [{"type": "json_invalid", "loc": ["body"], "msg": str(exc.detail)}]
        ) from None


# ---------------------------------------------------------------- identity binding


def bind(identity: Identity, claimed: str | None, field_label: str) -> None:
    """Refuse (403) a signed caller claiming another node id in ``field_label``.

    Messages are upstream's: ``AAuth sub '<sub>' does not match node_id '<id>'``.
    Shared-key callers carry no identity and are not bound (upstream).
    """
    _bind(identity, claimed, f"does not match {field_label}")


def bind_owner(identity: Identity, claimed: str | None) -> None:
    """Mailbox read/ack: the signer must own the mailbox."""
    _bind(identity, claimed, "does not own mailbox")


def _bind(identity: Identity, claimed: str | None, relation: str) -> None:
    if identity.scheme != "aauth":
        return
    if not identity.node_id or identity.node_id != (claimed or ""):
        raise HTTPProblem(
            403, f"AAuth sub '{identity.sub}' {relation} '{claimed or ''}'",
            reason="identity_mismatch",
        )


# --------------------------------------------------------------- start-up checks


def validate_node_auth(host: Host) -> None:
    """``aauth.md`` §5.2 for a node; raises :class:`StartupError` naming the setting."""
    s = host.settings
    mode = s.auth_mode
    if mode == "hmac":
        if not s.node_key.get_secret_value():
            raise StartupError("auth mode hmac needs DARKMESH_NODE_KEY ([node] node_key)")
        if s.relay_url and not s.relay_key.get_secret_value():
            raise StartupError(
                "auth mode hmac with DARKMESH_RELAY_URL set needs DARKMESH_RELAY_KEY "
                "([node] relay_key)"
            )
        return
    if mode == "aauth":
        if host.verifier is None or host.signer is None:
            raise StartupError(
                "auth mode aauth (DARKMESH_AUTH_MODE) needs the darkmesh-aauth plugin: "
                "pip install darkmesh-aauth, or set DARKMESH_AUTH_MODE=hmac|either"
            )
        if not host.signer.has_role("node"):
            raise StartupError(
                "auth mode aauth needs a node key: set DARKMESH_AAUTH_PRIVATE_JWK_PATH "
                "(create one with `darkmesh keygen`)"
            )
        if not host.verifier.ready():
            raise StartupError(
                "auth mode aauth needs a trust registry with at least one entry: set "
                "DARKMESH_TRUSTED_AGENTS_FILE (add entries with `darkmesh trust add`)"
            )
        return
    has_key = bool(s.node_key.get_secret_value())
    if not has_key and host.verifier is None:
        raise StartupError(
            "auth mode either needs a shared key (DARKMESH_NODE_KEY) or a trust registry "
            "(DARKMESH_TRUSTED_AGENTS_FILE, from darkmesh-aauth)"
        )


def validate_relay_auth(relay: RelayHost) -> None:
    s = relay.settings
    has_key = bool(s.key.get_secret_value())
    if s.auth_mode == "hmac":
        if not has_key:
            raise StartupError("relay auth mode hmac needs DARKMESH_RELAY_KEY ([relay] key)")
        return
    if s.auth_mode == "aauth":
        if relay.verifier is None:
            raise StartupError(
                "relay auth mode aauth (DARKMESH_RELAY_AUTH_MODE) needs the darkmesh-aauth "
                "plugin: pip install darkmesh-aauth"
            )
        if not relay.verifier.ready():
            raise StartupError(
                "relay auth mode aauth needs a trust registry with at least one entry: set "
                "DARKMESH_RELAY_TRUSTED_AGENTS_FILE"
            )
        return
    if not has_key and relay.verifier is None:
        raise StartupError(
            "relay auth mode either needs DARKMESH_RELAY_KEY or a trust registry "
            "(DARKMESH_RELAY_TRUSTED_AGENTS_FILE, from darkmesh-aauth)"
        )
