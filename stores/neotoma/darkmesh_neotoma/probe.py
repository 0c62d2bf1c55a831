"""The admission probe: a signed ``GET /session`` and its one log line (``neotoma.md`` §2.2)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from darkmesh_neotoma.client import NeotomaClient, NeotomaUnavailable

log = logging.getLogger("darkmesh.neotoma")

#: Declared by Neotoma but never produced by 0.22.0; accepted all the same.
KNOWN_REASONS = {"admitted", "no_match", "not_signed", "aauth_disabled", "grant_suspended",
                 "grant_revoked", "no_grants_for_user", "strict_rejected"}


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """What ``/session`` said about this node's signed identity.

    ``outcome``: ``admitted`` | ``no_match`` (verified, no grant) | ``not_verified``
    (signature refused; see ``signature_error_code``) | ``not_admitted`` (strict server
    answered 401 to a signed request) | ``unsigned`` (no signer installed) |
    ``unreachable`` | ``error``.
    """

    outcome: str
    admitted: bool
    admission_reason: str | None = None
    grant_id: str | None = None
    agent_label: str | None = None
    user_id: str | None = None
    signature_error_code: str | None = None
    authority: str | None = None
    issuer: str | None = None
    detail: str = ""
    checked_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def message(self) -> str:
        """The one outcome line logged at start-up and printed by the CLI."""
        if self.outcome == "admitted":
            return (f"Neotoma admitted this node: grant {self.grant_id}, label "
                    f"{self.agent_label!r}")
        if self.outcome == "no_match":
            return ("Neotoma verified this node's signature but no agent_grant matches it "
                    f"(admission_reason={self.admission_reason}); run `darkmesh neotoma grants "
                    "provision`")
        if self.outcome == "not_verified":
            return (f"Neotoma did not verify this node's signature: "
                    f"{self.signature_error_code or 'unknown'}; signed for authority "
                    f"{self.authority!r}, Neotoma's issuer is {self.issuer!r} (set "
                    "DARKMESH_NEOTOMA_AUTHORITY to match it)")
        if self.outcome == "not_admitted":
            return ("Neotoma refused this node's signed request (401, not admitted): run "
                    "`darkmesh neotoma grants provision`" + (f"; {self.detail}"
                                                             if self.detail else ""))
        if self.outcome == "unsigned":
            return ("Neotoma reachable; no signer installed, so this node cannot be admitted "
                    "(install darkmesh-aauth for signed reads and writeback)")
        if self.outcome == "unreachable":
            return f"Neotoma unreachable: {self.detail}"
        return f"Neotoma admission probe failed: {self.detail}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def interpret(
    status: int, body: Any, *, signed: bool, authority: str | None, issuer: str | None
) -> ProbeResult:
    """Classify one ``/session`` answer (pure, so every shape is testable)."""
    now = time.time()
    data = _obj(body)
    if status == 401:
        code = data.get("error_code")
        details = _obj(data.get("details"))
        if code == "AAUTH_SIGNATURE_INVALID":
            return ProbeResult(outcome="not_verified", admitted=False,
                               signature_error_code=_text(details.get("reason"))
                               or _text(data.get("message")),
                               authority=authority, issuer=issuer, checked_at=now)
        return ProbeResult(outcome="not_admitted", admitted=False, authority=authority,
                           issuer=issuer, detail=str(data.get("message") or code or ""),
                           checked_at=now)
    if status != 200 or not data:
        return ProbeResult(outcome="error", admitted=False, authority=authority, issuer=issuer,
                           detail=f"HTTP {status}", checked_at=now)
    aauth = _obj(data.get("aauth"))
    decision = _obj(_obj(data.get("attribution")).get("decision"))
    reason = _text(aauth.get("admission_reason")) or _text(aauth.get("reason"))
    user_id = _text(data.get("user_id")) or _text(aauth.get("user_id"))
    common: dict[str, Any] = {
        "admission_reason": reason, "grant_id": _text(aauth.get("grant_id")),
        "agent_label": _text(aauth.get("agent_label")), "user_id": user_id,
        "signature_error_code": _text(decision.get("signature_error_code")),
        "authority": authority, "issuer": issuer, "checked_at": now,
    }
    if aauth.get("admitted") is True:
        return ProbeResult(outcome="admitted", admitted=True, **common)
    if not signed:
        return ProbeResult(outcome="unsigned", admitted=False, **common)
    if aauth.get("verified") is not True:
        return ProbeResult(outcome="not_verified", admitted=False, **common)
    return ProbeResult(outcome="no_match", admitted=False, **common)


async def probe(client: NeotomaClient) -> ProbeResult:
    """Run the probe once; never raises."""
    signed = client.signer is not None
    authority = await client.authority() if signed else None
    issuer = client.discovered_issuer
    try:
        response = await client.session(signed=signed)
    except NeotomaUnavailable as exc:
        return ProbeResult(outcome="unreachable", admitted=False, authority=authority,
                           issuer=issuer, detail=str(exc), checked_at=time.time())
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if issuer is None and signed:
        well_known = await client.well_known()
        if well_known is not None and isinstance(well_known.get("issuer"), str):
            issuer = well_known["issuer"]
    result = interpret(response.status_code, body, signed=signed, authority=authority,
                       issuer=issuer)
    client.admitted = result.admitted
    return result


def log_outcome(result: ProbeResult) -> None:
    level = logging.INFO if result.outcome in ("admitted", "unsigned") else logging.WARNING
    log.log(level, result.message())
