"""Idempotent ``agent_grant`` provisioning (``neotoma.md`` §5).

Grant calls are user-session calls (Bearer, or loopback against a dev Neotoma) and are
never signed. The grant pins ``match_thumbprint`` only: Neotoma never verifies the
agent JWT, so a ``match_sub`` grant would admit any key claiming that ``sub``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from darkmesh_neotoma.client import NeotomaClient, NeotomaUnavailable
from darkmesh_neotoma.probe import probe
from darkmesh_neotoma.settings import NeotomaSettings
from sdl_core import AgentIdentity, StateArea

GRANT_ID_KEY = "grant_id"
MARKER = "managed by darkmesh"
EXIT_OK, EXIT_NOT_APPLIED, EXIT_ERROR = 0, 1, 2

Sleep = Callable[[float], Awaitable[None]]


class ProvisionError(Exception):
    """Provisioning cannot go on; the message tells the operator what to do (exit 2)."""


def normal_capabilities(caps: Any) -> list[dict[str, Any]]:
    """Each ``entity_types`` sorted, entries sorted by ``op`` (then their types)."""
    out = []
    for entry in caps if isinstance(caps, list) else []:
        if not isinstance(entry, Mapping):
            continue
        item = dict(entry)
        if isinstance(item.get("entity_types"), list):
            item["entity_types"] = sorted(str(t) for t in item["entity_types"])
        out.append(item)
    return sorted(out, key=lambda e: (str(e.get("op")), json.dumps(e, sort_keys=True)))


def notes_for(identity: AgentIdentity) -> str:
    return f"{MARKER}; sub={identity.sub}; iss={identity.iss}"


def desired_grant(identity: AgentIdentity, settings: NeotomaSettings) -> dict[str, Any]:
    return {
        "label": settings.grant_label or f"Darkmesh node {identity.sub}",
        "capabilities": normal_capabilities(
            [c.model_dump() for c in settings.grant_capabilities]
        ),
        "match_thumbprint": identity.thumbprint,
        "notes": notes_for(identity),
    }


def _marked_for(notes: Any, sub: str) -> bool:
    if not isinstance(notes, str) or not notes.startswith(MARKER):
        return False
    parts = {p.strip() for p in notes.split(";")}
    return f"sub={sub}" in parts


def belongs_to(grant: Mapping[str, Any], identity: AgentIdentity, recorded: str | None) -> bool:
    """Is ``grant`` one of this identity's (recorded id, marker in notes, or same sub)?"""
    return (
        (recorded is not None and grant.get("grant_id") == recorded)
        or _marked_for(grant.get("notes"), identity.sub)
        or grant.get("match_sub") == identity.sub
    )


def drift(current: Mapping[str, Any], desired: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                            dict[str, Any]]:
    """(PATCH body with only the differing fields, plan ``diff``)."""
    patch: dict[str, Any] = {}
    diff: dict[str, Any] = {}
    for name in ("label", "notes"):
        if current.get(name) != desired[name]:
            patch[name] = desired[name]
            diff[name] = {"from": current.get(name), "to": desired[name]}
    if current.get("match_sub") is not None or current.get("match_iss") is not None:
        # match_iss requires match_sub, so both are cleared together.
        patch["match_sub"] = None
        patch["match_iss"] = None
        diff["match"] = {
            "from": {"match_sub": current.get("match_sub"),
                     "match_iss": current.get("match_iss")},
            "to": {"match_sub": None, "match_iss": None},
        }
    have = normal_capabilities(current.get("capabilities"))
    if have != desired["capabilities"]:
        patch["capabilities"] = desired["capabilities"]
        diff["capabilities"] = {"from": have, "to": desired["capabilities"]}
    return patch, diff


def listing_error(status: int, body: str) -> str:
    """The §5 hint for a failed ``GET /agents/grants``."""
    if status == 401:
        return ("Neotoma refused the Bearer token; grants can be managed only by a user "
                "session: set a valid token (DARKMESH_NEOTOMA_TOKEN / NEOTOMA_TOKEN, or use "
                "loopback against a dev Neotoma), or use Inspector → Agents → Grants. "
                f"Neotoma said: {body[:300]}")
    if status == 403:
        return ("Neotoma refused the grants call (403): grant calls must be unsigned user "
                "calls (Bearer or dev loopback), never an agent's signed request. "
                f"Neotoma said: {body[:300]}")
    if status == 404:
        return ("this Neotoma has no /agents/grants; it is older than the Stronger AAuth "
                "Admission release (>= 0.9.0): upgrade it.")
    return f"GET /agents/grants answered {status}: {body[:500]}"


@dataclass(kw_only=True)
class Outcome:
    plan: dict[str, Any]
    exit_code: int
    messages: list[str] = field(default_factory=list)


class Provisioner:
    """Computes and applies the plan for one identity."""

    def __init__(
        self, *, client: NeotomaClient, identity: AgentIdentity, settings: NeotomaSettings,
        state: StateArea, sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.identity = identity
        self.settings = settings
        self.state = state
        self.sleep = sleep

    async def _call(self, method: str, path: str, expect: int, body: Any = None,
                    params: Mapping[str, str] | None = None) -> dict[str, Any]:
        try:
            response = await self.client.grants_call(method, path, body=body, params=params)
        except NeotomaUnavailable as exc:
            raise ProvisionError(f"Neotoma is unreachable at {self.client.base_url}: {exc}") \
                from exc
        if response.status_code != expect:
            if path == "/agents/grants" and method == "GET":
                raise ProvisionError(listing_error(response.status_code, response.text))
            raise ProvisionError(f"{method} {path} answered {response.status_code} "
                                 f"(expected {expect}): {response.text[:500]}")
        try:
            data = response.json()
        except ValueError as exc:
            raise ProvisionError(f"{method} {path} answered non-JSON: "
                                 f"{response.text[:300]}") from exc
        if not isinstance(data, dict):
            raise ProvisionError(f"{method} {path} answered {response.text[:300]}")
        return data

    async def list_grants(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "/agents/grants", 200, params={"status": "all"})
        grants = data.get("grants")
        if not isinstance(grants, list):
            raise ProvisionError("GET /agents/grants answered without a grants list: "
                                 f"{json.dumps(data)[:500]}")
        return [g for g in grants if isinstance(g, dict)]

    async def run(self, *, apply: bool, probe_after: bool = True) -> Outcome:
        """Plan, and when ``apply``, execute. Dry runs write nothing."""
        ident = self.identity
        plan: dict[str, Any] = {
            "neotoma_url": self.client.base_url, "sub": ident.sub, "iss": ident.iss,
            "thumbprint": ident.thumbprint, "action": None, "grant_id": None,
            "applied": False,
        }
        messages: list[str] = []
        grants = await self.list_grants()
        desired = desired_grant(ident, self.settings)
        mine = [g for g in grants if g.get("match_thumbprint") == ident.thumbprint]
        mine.sort(key=lambda g: (g.get("status") == "active",
                                 str(g.get("last_observation_at") or "")), reverse=True)
        current = mine[0] if mine else None
        wrote = False
        patch: dict[str, Any] = {}
        if current is not None:
            plan["grant_id"] = current.get("grant_id")
            status = current.get("status")
            if status in ("suspended", "revoked"):
                plan["action"] = status
                messages.append(
                    f"this node's grant {current.get('grant_id')} is {status}; an operator did "
                    "that on purpose, so Darkmesh does not restore it. To re-enable it: POST "
                    f"/agents/grants/{current.get('grant_id')}/restore, or Inspector → Agents → "
                    "Grants.")
                return Outcome(plan=plan, exit_code=EXIT_NOT_APPLIED, messages=messages)
            patch, diff = drift(current, desired)
            if not patch:
                plan["action"] = "noop"
            else:
                plan["action"] = "update"
                plan["diff"] = diff
        else:
            plan["action"] = "create"
        recorded = self.state.get(GRANT_ID_KEY)
        retire = [
            g for g in grants
            if g.get("match_thumbprint") != ident.thumbprint
            and g.get("status") in ("active", "suspended")
            and belongs_to(g, ident, recorded)
        ]
        if retire:
            plan["retired"] = [g.get("grant_id") for g in retire]
        if plan["action"] == "noop" and not retire:
            plan["applied"] = True
            return Outcome(plan=plan, exit_code=EXIT_OK, messages=messages)
        if not apply:
            messages.append("planned, not applied (dry run, or not confirmed; use --auto to "
                            "apply without asking)")
            return Outcome(plan=plan, exit_code=EXIT_NOT_APPLIED, messages=messages)

        if plan["action"] == "create":
            body = {**desired, "status": "active"}
            created = await self._call("POST", "/agents/grants", 201, body=body)
            grant = created.get("grant")
            plan["grant_id"] = grant.get("grant_id") if isinstance(grant, dict) else None
            wrote = True
        elif plan["action"] == "update":
            await self._call("PATCH", f"/agents/grants/{plan['grant_id']}", 200, body=patch)
            wrote = True
        if plan["grant_id"]:
            self.state.put(GRANT_ID_KEY, plan["grant_id"])
        # The new grant exists before the old ones are revoked: admission has no gap.
        for old in retire:
            await self._call("POST", f"/agents/grants/{old.get('grant_id')}/revoke", 200)
            wrote = True
        plan["applied"] = True
        if wrote:
            # Neotoma caches admission lookups for 5 s (misses too).
            await self.sleep(self.settings.grant_settle_seconds)
            if probe_after and self.client.signer is not None:
                result = await probe(self.client)
                plan["admitted"] = result.admitted
                plan["admission_reason"] = result.admission_reason or result.outcome
        return Outcome(plan=plan, exit_code=EXIT_OK, messages=messages)
