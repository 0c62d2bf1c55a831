"""The inbound verifier of nodes and relays (``aauth.md`` §2).

Checks run in the spec's order and the first failure gives the reason code, so a caller
learns nothing about later checks (registry pins come after the signature). Everything up to
the replay cache is synchronous and pure; the replay cache is the caller's (node database or
relay backend), so relays sharing one Redis share it.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from darkmesh_aauth.digest import check_content_digest
from darkmesh_aauth.keys import (
    PRIVATE_MEMBERS,
    Algorithm,
    JWKError,
    PublicKey,
    canonical_signature,
    key_kind,
    public_jwk,
    public_key_from_jwk,
    thumbprint,
    verify_raw,
)
from darkmesh_aauth.reasons import failure
from darkmesh_aauth.registry import TrustEntry, TrustRegistry
from darkmesh_aauth.rfc9421 import ComponentError, Message, signature_base
from darkmesh_aauth.sfv import SFError, Token, parse_dictionary, serialize_member
from darkmesh_aauth.token import TOKEN_TYPE, ParsedToken, TokenShapeError, jws_valid, parse_token
from sdl_core import (
    HTTPProblem,
    InboundRequest,
    VerifiedAgent,
    expand_loopback,
    normalise_authority,
)

ReplayCache = Callable[[str, float], Awaitable[bool]]

MAX_SIGNATURE_KEY = 8 * 1024
MAX_SIGNATURE_INPUT = 2 * 1024
MAX_SIGNATURE = 1024
MAX_COMPONENTS = 16
MAX_CLAIM_LENGTH = 255
MAX_TOKEN_LIFETIME = 86400
#: Derived components a request may cover (``@status`` is a response's, and
#: ``@query-param`` needs a parameter, which the profile refuses).
REQUEST_DERIVED = frozenset({
    "@method", "@authority", "@path", "@request-target", "@query", "@target-uri", "@scheme",
})
QUERY_COVERING = frozenset({"@request-target", "@query", "@target-uri"})
SIGNATURE_HEADERS = ("signature", "signature-input", "signature-key")
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
TOKEN_CACHE_SIZE = 4096


def node_id_of(sub: str) -> str | None:
    """A signer's node id (``aauth.md`` §4.2): after ``darkmesh-node@``, or the whole sub
    when it has no ``@``; other subs (connectors, operators) have none."""
    if sub.startswith("darkmesh-node@"):
        return sub[len("darkmesh-node@"):] or None
    if "@" not in sub:
        return sub or None
    return None


def required_components(has_body: bool, has_query: bool) -> list[str]:
    """What this request must cover, in our signer's order (for ``required_input``)."""
    names = ["@method", "@authority", "@path"]
    if has_query:
        names.append("@request-target")
    if has_body:
        names += ["content-type", "content-digest"]
    names.append("signature-key")
    return names


@dataclass(frozen=True, kw_only=True)
class _KeyInfo:
    """What a token's ``cnf.jwk`` yields once validated (cached per token)."""

    algorithm: Algorithm
    public_jwk: Mapping[str, Any]
    thumbprint: str
    key: PublicKey


class _TokenCacheEntry:
    __slots__ = ("jws_ok", "key", "parsed")

    def __init__(self, parsed: ParsedToken) -> None:
        self.parsed = parsed
        self.key: _KeyInfo | None = None
        self.jws_ok: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Checked:
    """A request that passed every check but the replay cache."""

    agent: VerifiedAgent
    replay_key: str
    replay_ttl: float


class AAuthVerifier:
    """Implements :class:`sdl_core.Verifier` for the AAuth profile.

    :param registry: the hot-reloaded trust registry.
    :param window: the signature window W in seconds.
    :param authorities: configured accepted authorities; when non-empty they replace the
        defaults the caller passes (those come from ``listen_url`` / ``public_url``).
    :param scheme: the scheme ``@target-uri`` / ``@scheme`` are rebuilt with.
    """

    def __init__(
        self,
        registry: TrustRegistry,
        *,
        window: int = 60,
        authorities: Sequence[str] = (),
        scheme: str = "http",
        accept_upstream_tokens: bool = False,
        max_replay_entries: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.window = window
        self.configured_authorities = expand_loopback(
            normalise_authority(a, scheme) for a in authorities
        )
        self.scheme = scheme
        self.accept_upstream = accept_upstream_tokens
        self.max_replay_entries = max_replay_entries
        self.clock = clock
        self._tokens: OrderedDict[str, _TokenCacheEntry] = OrderedDict()
        self._replay_expiries: list[float] = []
        self.counters: dict[str, int] = {"accepted": 0, "refused": 0}

    # ------------------------------------------------------------- Verifier API

    def ready(self) -> bool:
        """False when the trust registry is empty (the guard answers 503)."""
        return len(self.registry.refresh().entries) > 0

    async def verify(
        self, request: InboundRequest, *, authorities: Sequence[str],
        remember_once: ReplayCache,
    ) -> VerifiedAgent:
        """Every check of ``aauth.md`` §2.2, the replay cache last."""
        try:
            checked = self.check(request, authorities)
            await self._remember(checked, remember_once)
        except HTTPProblem:
            self.counters["refused"] += 1
            raise
        self.counters["accepted"] += 1
        return checked.agent

    def status(self) -> dict[str, Any]:
        """``{path, entries, loaded_at, last_error}`` plus counters, for ``darkmesh status``."""
        out = self.registry.status()
        out["authorities"] = list(self.configured_authorities) or None
        out["requests"] = dict(self.counters)
        return out

    # ---------------------------------------------------------------- checks

    def accepted_authorities(self, defaults: Sequence[str]) -> list[str]:
        if self.configured_authorities:
            return list(self.configured_authorities)
        return expand_loopback(normalise_authority(a, self.scheme) for a in defaults)

    def check(self, request: InboundRequest, authorities: Sequence[str]) -> Checked:
        """Steps 0–13 of ``aauth.md`` §2.2; raises :class:`sdl_core.VerificationFailed`."""
        now = self.clock()
        window = self.window
        snapshot = self.registry.refresh()
        if not snapshot.entries:
            raise HTTPProblem(503, "AAuth not available: trust registry empty",
                              reason="registry_empty")

        # 1. Signature-Key
        sk_value = request.header("signature-key")
        if sk_value is None:
            raise failure("signature_key_missing")
        si_value = request.header("signature-input")
        sig_value = request.header("signature")
        if si_value is None or sig_value is None:
            raise failure("signature_missing")
        if len(sk_value) > MAX_SIGNATURE_KEY:
            raise failure("signature_key_malformed")
        label, raw_token = self._signature_key(sk_value)

        # 2. Signature-Input and Signature members of that label
        if len(si_value) > MAX_SIGNATURE_INPUT or len(sig_value) > MAX_SIGNATURE:
            raise failure("signature_malformed")
        try:
            si_dict = parse_dictionary(si_value)
            sig_dict = parse_dictionary(sig_value)
        except SFError:
            raise failure("signature_malformed") from None
        member = si_dict.get(label)
        sig_member = sig_dict.get(label)
        if member is None or sig_member is None:
            raise failure("signature_missing")
        if not isinstance(member[0], list) or not isinstance(sig_member[0], bytes):
            raise failure("signature_malformed")
        signature: bytes = sig_member[0]
        components = self._components(member[0])
        params: dict[str, Any] = member[1]

        # 3. created / expires
        created = params.get("created")
        if type(created) is not int:
            raise failure("created_missing")
        if abs(now - created) > window:
            raise failure("created_out_of_window")
        expires = params.get("expires")
        if expires is not None and (type(expires) is not int or expires <= created):
            raise failure("signature_malformed")
        if expires is not None and now > expires:
            raise failure("expired_signature")
        nonce, keyid = params.get("nonce"), params.get("keyid")
        if nonce is not None and not isinstance(nonce, str):
            raise failure("signature_malformed")
        if keyid is not None and not isinstance(keyid, (str, Token)):
            raise failure("signature_malformed")

        # 4. coverage
        has_body = len(request.body) > 0
        has_query = bool(request.query)
        needed = required_components(has_body, has_query)
        covered = set(components)
        if not covered.issuperset(n for n in needed if n != "@request-target"):
            raise failure("signature_covered_components_incomplete", required_input=needed)
        if has_query and not covered & QUERY_COVERING:
            raise failure("query_not_covered", required_input=needed)
        for name in components:
            if name.startswith("@"):
                continue
            value = request.header(name)
            if value is None:
                reason = ("content_digest_missing" if name == "content-digest"
                          else "component_header_missing")
                raise failure(reason, required_input=needed)
            if not value.isascii():
                raise failure("signature_malformed")

        # 5–8. token, claims, cnf.jwk, thumbprint
        cached = self._token(raw_token)
        payload = cached.parsed.payload
        self._check_claims(payload, now)
        key = self._key(cached)
        jkt = payload.get("jkt")
        if jkt is not None and jkt != key.thumbprint:
            raise failure("jwt_jkt_mismatch")
        if keyid is not None and not self.accept_upstream and str(keyid) != key.thumbprint:
            raise failure("keyid_mismatch")

        # 9. registry
        entry = snapshot.by_thumbprint.get(key.thumbprint)
        if entry is None:
            raise failure("unknown_thumbprint")

        # 10. content digest, over the raw bytes received
        if "content-digest" in covered:
            digest_problem = check_content_digest(request.header("content-digest") or "",
                                                  request.body)
            if digest_problem is not None:
                raise failure(digest_problem, required_input=needed)

        # 11. the HTTP signature, against configured authorities only
        params_value = serialize_member(member)
        self._check_signature(request, components, params_value, signature, key,
                              self.accepted_authorities(authorities))

        # 12. the token's own JWS, under cnf.jwk
        if cached.jws_ok is None:
            cached.jws_ok = jws_valid(cached.parsed, key.public_jwk, key.algorithm)
        if not cached.jws_ok:
            raise failure("jwt_signature_invalid")

        # 13. registry pins
        sub, iss = payload["sub"], payload["iss"]
        if sub != entry.sub:
            raise failure("sub_mismatch")
        if entry.iss is not None and iss != entry.iss:
            raise failure("iss_mismatch")

        return self._checked(entry, key, label, payload, created, expires, signature, now)

    # --------------------------------------------------------------- pieces

    @staticmethod
    def _signature_key(value: str) -> tuple[str, str]:
        try:
            parsed = parse_dictionary(value)
        except SFError:
            raise failure("signature_key_malformed") from None
        if len(parsed) != 1:
            raise failure("signature_key_malformed")
        ((label, (scheme, params)),) = parsed.items()
        if not isinstance(scheme, Token):
            raise failure("signature_key_malformed")
        if str(scheme) != "jwt":
            raise failure("unsupported_scheme")
        jwt = params.get("jwt")
        if not isinstance(jwt, str):
            raise failure("signature_key_malformed")
        return label, jwt

    @staticmethod
    def _components(items: list[Any]) -> list[str]:
        if len(items) > MAX_COMPONENTS:
            raise failure("signature_malformed")
        names: list[str] = []
        for item, item_params in items:
            if not isinstance(item, str) or item_params or not item or item != item.lower():
                raise failure("signature_malformed")
            if item.startswith("@"):
                if item not in REQUEST_DERIVED:
                    raise failure("signature_malformed")
            elif not set(item) <= _TCHARS:
                raise failure("signature_malformed")
            if item in names:
                raise failure("signature_malformed")
            names.append(item)
        return names

    def _token(self, raw: str) -> _TokenCacheEntry:
        cached = self._tokens.get(raw)
        if cached is not None:
            self._tokens.move_to_end(raw)
            return cached
        try:
            parsed = parse_token(raw)
        except TokenShapeError as exc:
            raise failure(exc.code) from None
        if parsed.header.get("typ") != TOKEN_TYPE:
            raise failure("jwt_typ_invalid")
        if parsed.header.get("alg") not in ("Ed25519", "ES256"):
            raise failure("jwt_alg_invalid")
        entry = _TokenCacheEntry(parsed)
        self._tokens[raw] = entry
        if len(self._tokens) > TOKEN_CACHE_SIZE:
            self._tokens.popitem(last=False)
        return entry

    def _check_claims(self, payload: Mapping[str, Any], now: float) -> None:
        window = self.window
        for claim in ("sub", "iss"):
            value = payload.get(claim)
            if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH:
                raise failure(f"jwt_{claim}_missing")
        iat = payload.get("iat")
        if type(iat) is not int:
            raise failure("jwt_iat_missing")
        if iat > now + window:
            raise failure("jwt_iat_future")
        exp = payload.get("exp")
        if type(exp) is not int:
            raise failure("jwt_exp_missing")
        if exp + window < now:
            raise failure("jwt_expired")
        if exp - iat > MAX_TOKEN_LIFETIME:
            raise failure("jwt_lifetime_excessive")
        jti = payload.get("jti")
        if not (isinstance(jti, str) and jti) and not (self.accept_upstream and jti is None):
            raise failure("jwt_jti_missing")

    def _key(self, cached: _TokenCacheEntry) -> _KeyInfo:
        if cached.key is not None:
            return cached.key
        cnf = cached.parsed.payload.get("cnf")
        jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
        if jwk is None:
            raise failure("cnf_jwk_missing")
        if not isinstance(jwk, dict):
            raise failure("cnf_jwk_malformed")
        if not isinstance(jwk.get("kty"), str):
            raise failure("cnf_jwk_malformed")
        kind = key_kind(jwk)
        key_object: PublicKey | None = None
        if kind is not None:
            try:
                key_object = public_key_from_jwk(jwk)
            except JWKError as exc:
                raise failure(exc.code) from None
        if any(name in jwk for name in PRIVATE_MEMBERS):
            raise failure("cnf_jwk_private")
        if jwk["kty"] == "oct":
            raise failure("cnf_jwk_not_public")
        alg = jwk.get("alg")
        if alg is None and self.accept_upstream and kind == "ES256":
            alg = "ES256"  # upstream ES256 keys carry no alg (aauth.md §2.7)
        if alg is None:
            raise failure("cnf_jwk_alg_missing")
        if kind is None or alg != kind or key_object is None:
            raise failure("cnf_jwk_unsupported")
        if cached.parsed.header.get("alg") != alg:
            raise failure("jwt_alg_invalid")
        try:
            tp = thumbprint(jwk)
        except (JWKError, KeyError, TypeError):
            raise failure("thumbprint_failed") from None
        info = _KeyInfo(algorithm=kind, public_jwk=public_jwk(jwk) | {"alg": kind},
                        thumbprint=tp, key=key_object)
        cached.key = info
        return info

    def _check_signature(
        self, request: InboundRequest, components: Sequence[str], params_value: str,
        signature: bytes, key: _KeyInfo, authorities: Sequence[str],
    ) -> None:
        component_list: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in components]
        base_message = Message(method=request.method, scheme=self.scheme, path=request.raw_path,
                               query=request.query or None, headers=request.headers)

        def verifies(authority: str) -> bool:
            message = Message(method=base_message.method, scheme=self.scheme,
                              authority=authority, path=base_message.path,
                              query=base_message.query, headers=base_message.headers)
            try:
                base = signature_base(message, component_list, params_value).encode("ascii")
            except (ComponentError, ValueError):  # UnicodeEncodeError included: not ours
                return False
            return verify_raw(key.key, key.algorithm, signature, base)

        if any(verifies(authority) for authority in authorities):
            return
        # Only to choose the reason: a request signed for the Host it names but not for us.
        host = request.header("host")
        if host:
            try:
                claimed = normalise_authority(host, self.scheme)
            except ValueError:
                claimed = ""
            if claimed and claimed not in authorities and verifies(claimed):
                raise failure("authority_mismatch")
        raise failure("signature_invalid")

    def _checked(
        self, entry: TrustEntry, key: _KeyInfo, label: str, payload: Mapping[str, Any],
        created: int, expires: int | None, signature: bytes, now: float,
    ) -> Checked:
        sub = str(payload["sub"])
        agent = VerifiedAgent(
            sub=sub, iss=str(payload["iss"]), thumbprint=key.thumbprint,
            public_jwk=dict(key.public_jwk), algorithm=key.algorithm, label=label,
            capabilities=entry.capabilities, node_id=node_id_of(sub),
            jti=payload.get("jti") if isinstance(payload.get("jti"), str) else None,
            iat=payload["iat"], exp=payload["exp"], created=created,
        )
        canonical = canonical_signature(key.algorithm, signature)
        replay_key = hashlib.sha256(
            key.thumbprint.encode("ascii") + b"\x00" + canonical
        ).hexdigest()
        until = created + self.window
        if expires is not None:
            until = min(until, expires)
        return Checked(agent=agent, replay_key=f"sig:{replay_key}",
                       replay_ttl=max(until - now, 1.0))

    async def _remember(self, checked: Checked, remember_once: ReplayCache) -> None:
        now = self.clock()
        expiries = self._replay_expiries
        while expiries and expiries[0] <= now:
            heapq.heappop(expiries)
        if len(expiries) >= self.max_replay_entries:
            # Evicting live entries would let a replay through; refuse instead.
            raise HTTPProblem(503, "AAuth not available: replay cache full",
                              reason="replay_cache_full")
        if not await remember_once(checked.replay_key, checked.replay_ttl):
            raise failure("replayed")
        heapq.heappush(expiries, now + checked.replay_ttl)
