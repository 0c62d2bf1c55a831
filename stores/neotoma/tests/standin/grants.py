"""``agent_grant`` storage, validation, transitions and admission (``neotoma.md`` §1.5, §2.6, §3.6).

Admission cache (§1.5): lookups are cached for ``ttl`` seconds under the request's keys
``tp:<thumb>``, ``si:<sub>|<iss>`` and ``s:<sub>``, read in that order, the first live
entry winning. A miss is cached under all three keys; a hit under the keys that match
the grant's own match fields. A grant change clears only the entries under that grant's
own match keys. This reproduces both observed lags: a thumbprint-only grant created
right after a probe stays invisible behind the cached ``si:`` miss, and a restore right
after a suspend stays invisible behind the miss the first post-suspend probe cached.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from standin.errors import StandinError
from standin.httpsig import SignedIdentity

OPS = (
    "store", "store_structured", "create_relationship", "correct", "retrieve",
    "github_harness:read", "github_harness:write", "github_harness:*",
)
STATUSES = ("active", "suspended", "revoked")
TRANSITIONS = {
    ("active", "suspended"), ("suspended", "active"), ("active", "revoked"),
    ("suspended", "revoked"), ("revoked", "active"),
}
PATCHABLE = ("label", "capabilities", "notes", "match_sub", "match_iss", "match_thumbprint")
_MISS = object()


def iso(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[
        :-3
    ] + "Z"


def invalid(message: str) -> StandinError:
    return StandinError(400, "AGENT_GRANT_INVALID", message, {"code": "agent_grant_invalid"})


def validate_capabilities(value: Any) -> None:
    shape = "capabilities must be an array of { op, entity_types } or { op, repos } for " \
            "github_harness ops"
    if not isinstance(value, list):
        raise invalid(shape)
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise invalid(shape)
        op = entry.get("op")
        if op not in OPS:
            raise invalid(f"capabilities[{index}].op must be one of: " + ", ".join(OPS))
        if str(op).startswith("github_harness"):
            repos = entry.get("repos")
            if not isinstance(repos, list) or not repos:
                raise invalid(shape)
            continue
        types = entry.get("entity_types")
        if (not isinstance(types, list) or not types
                or not all(isinstance(t, str) and t for t in types)):
            raise invalid(f"capabilities[{index}].entity_types must be a non-empty array of "
                          "strings")


def validate_grant(grant: dict[str, Any]) -> None:
    if not grant.get("match_sub") and not grant.get("match_thumbprint"):
        raise invalid("Grant must declare at least one of match_sub or match_thumbprint")
    if grant.get("match_iss") and not grant.get("match_sub"):
        raise invalid("match_iss requires match_sub (iss alone is not a valid identity)")
    label = grant.get("label")
    if not isinstance(label, str) or not label.strip():
        raise invalid("label is required and must be a non-empty string")
    validate_capabilities(grant.get("capabilities"))
    if grant.get("status") not in STATUSES:
        raise invalid("status must be one of: active, suspended, revoked")
    for name in ("match_sub", "match_iss", "match_thumbprint", "notes"):
        if grant.get(name) is not None and not isinstance(grant[name], str):
            raise invalid(f"{name} must be a string")


def own_keys(grant: dict[str, Any]) -> list[str]:
    keys = []
    if grant.get("match_thumbprint"):
        keys.append(f"tp:{grant['match_thumbprint']}")
    if grant.get("match_sub"):
        keys.append(f"si:{grant['match_sub']}|{grant.get('match_iss') or ''}")
        keys.append(f"s:{grant['match_sub']}")
    return keys


@dataclass(kw_only=True)
class Admission:
    grant: dict[str, Any] | None
    reason: str


class GrantRegistry:
    """Every user's grants, plus the admission cache."""

    def __init__(self, clock: Callable[[], float], cache_ttl: float,
                 admission_disabled: bool = False) -> None:
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.admission_disabled = admission_disabled
        self.grants: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, tuple[float, Any]] = {}
        self._serial = 0

    # --------------------------------------------------------------- admission

    def _request_keys(self, who: SignedIdentity) -> list[str]:
        return [f"tp:{who.thumbprint}", f"si:{who.sub or ''}|{who.iss or ''}",
                f"s:{who.sub or ''}"]

    def _scan(self, who: SignedIdentity) -> dict[str, Any] | None:
        best: tuple[int, str, dict[str, Any]] | None = None
        for grant in self.grants.values():
            if grant["status"] != "active":
                continue
            score = 0
            if grant.get("match_thumbprint") and grant["match_thumbprint"] == who.thumbprint:
                score = 3
            elif grant.get("match_sub") and who.sub == grant["match_sub"]:
                if grant.get("match_iss"):
                    score = 2 if grant["match_iss"] == who.iss else 0
                else:
                    score = 1
            if score and (best is None or (score, grant["last_observation_at"]) > best[:2]):
                best = (score, grant["last_observation_at"], grant)
        return best[2] if best else None

    def admit(self, who: SignedIdentity) -> Admission:
        if self.admission_disabled:
            return Admission(grant=None, reason="aauth_disabled")
        now = self.clock()
        keys = self._request_keys(who)
        for key in keys:
            entry = self._cache.get(key)
            if entry is not None and entry[0] > now:
                grant_id = entry[1]
                if grant_id is _MISS:
                    return Admission(grant=None, reason="no_match")
                grant = self.grants.get(grant_id)
                if grant is not None:
                    return Admission(grant=grant, reason="admitted")
        grant = self._scan(who)
        expires = now + self.cache_ttl
        if grant is None:
            for key in keys:
                self._cache[key] = (expires, _MISS)
            return Admission(grant=None, reason="no_match")
        for key in set(keys) & set(own_keys(grant)):
            self._cache[key] = (expires, grant["grant_id"])
        return Admission(grant=grant, reason="admitted")

    def _invalidate(self, *grants: dict[str, Any]) -> None:
        for grant in grants:
            for key in own_keys(grant):
                self._cache.pop(key, None)

    # ---------------------------------------------------------------- routes

    def list(self, user_id: str, status: str, q: str) -> list[dict[str, Any]]:
        out = []
        for grant in self.grants.values():
            if grant["user_id"] != user_id:
                continue
            if status != "all" and grant["status"] != status:
                continue
            if q and not any(q in (grant.get(f) or "")
                             for f in ("label", "match_sub", "match_thumbprint")):
                continue
            out.append(copy.deepcopy(grant))
        return out

    def get(self, user_id: str, grant_id: str, *, route: str) -> dict[str, Any]:
        grant = self.grants.get(grant_id)
        if grant is None or grant["user_id"] != user_id:
            if route == "get":
                raise StandinError(404, "RESOURCE_NOT_FOUND", f"Agent grant not found: {grant_id}")
            raise StandinError(404, "AGENT_GRANT_NOT_FOUND", f"Agent grant {grant_id} not found.")
        return grant

    def create(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        grant: dict[str, Any] = {
            "label": body.get("label"),
            "capabilities": body.get("capabilities"),
            "status": body.get("status", "active"),
            "match_sub": body.get("match_sub"),
            "match_iss": body.get("match_iss"),
            "match_thumbprint": body.get("match_thumbprint"),
            "notes": body.get("notes"),
        }
        validate_grant(grant)
        identity = (grant["match_thumbprint"]
                    or f"{grant['match_sub']}|{grant['match_iss'] or ''}")
        self._serial += 1
        seed = f"agent_grant:{user_id}:{identity}:{self._serial}"
        grant_id = "ent_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
        grant.update({
            "grant_id": grant_id, "user_id": user_id, "last_used_at": None,
            "import_source": None, "created_at": iso(now), "last_observation_at": iso(now),
        })
        self.grants[grant_id] = grant
        self._invalidate(grant)
        return copy.deepcopy(grant)

    def patch(self, user_id: str, grant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        grant = self.get(user_id, grant_id, route="patch")
        if "status" in body:
            raise invalid("status cannot be changed with PATCH; use /suspend, /revoke or "
                          "/restore")
        unknown = sorted(set(body) - set(PATCHABLE))
        if unknown:
            raise invalid(f"unknown grant field(s): {', '.join(unknown)}")
        updated = dict(grant)
        for name in PATCHABLE:
            if name in body:
                updated[name] = body[name]
        validate_grant(updated)
        before = dict(grant)
        updated["last_observation_at"] = iso(self.clock())
        grant.clear()
        grant.update(updated)
        self._invalidate(before, grant)
        return copy.deepcopy(grant)

    def transition(self, user_id: str, grant_id: str, action: str) -> dict[str, Any]:
        grant = self.get(user_id, grant_id, route=action)
        target = {"suspend": "suspended", "revoke": "revoked", "restore": "active"}[action]
        if (grant["status"], target) not in TRANSITIONS:
            raise StandinError(
                409, "AGENT_GRANT_STATUS_TRANSITION",
                f"Illegal grant status transition: {grant['status']} → {target}.",
                {"code": "agent_grant_status_transition"},
            )
        grant["status"] = target
        grant["last_observation_at"] = iso(self.clock())
        self._invalidate(grant)
        return copy.deepcopy(grant)


def allows(grant: dict[str, Any], op: str, entity_type: str, *, exact: bool = False) -> bool:
    """Does ``grant`` hold ``op`` for ``entity_type``? ``store`` and ``store_structured``
    are one family unless ``exact``."""
    family = {"store", "store_structured"}
    for entry in grant.get("capabilities") or []:
        entry_op = entry.get("op")
        op_ok = entry_op == op or (not exact and op in family and entry_op in family)
        types = entry.get("entity_types") or []
        if op_ok and (entity_type in types or "*" in types):
            return True
    return False
