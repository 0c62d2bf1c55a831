"""Source diagnostics: the same identities through the vault and the live store.

Strengths are the *effective* ones a skill sees (``wire-v1.md`` §7.2): the last
``interactions`` record for an email, else the contact's own ``strength``, else 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sdl_core import clamp01, normalise_email, parse_strength, record_key

FIELDS = ("name", "email", "org", "role")


def effective(contacts: Iterable[dict[str, Any]],
              interactions: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """identity key → {fields present, strength, strength_source}."""
    overrides: dict[str, float] = {}
    for row in interactions:
        email = normalise_email(row.get("email"))
        if email:
            overrides[email] = clamp01(parse_strength(row.get("strength")))
    out: dict[str, dict[str, Any]] = {}
    for contact in contacts:
        key = record_key("contacts", contact)
        email = normalise_email(contact.get("email"))
        if email in overrides:
            strength, source = overrides[email], "interactions"
        elif contact.get("strength") is not None:
            strength, source = clamp01(parse_strength(contact.get("strength"))), "contact"
        else:
            strength, source = 0.5, "default"
        out[key] = {
            "fields": {f: contact.get(f) for f in FIELDS if contact.get(f) not in (None, "")},
            "strength": round(strength, 3),
            "strength_source": source,
        }
    return out


def compare(
    vault: dict[str, dict[str, Any]], live: dict[str, dict[str, Any]] | None,
    *, email: str | None = None,
) -> dict[str, Any]:
    """Side-by-side rows and a summary. ``live`` None means Neotoma was unreachable."""
    wanted = normalise_email(email) if email else None
    keys = sorted(set(vault) | set(live or {}))
    if wanted is not None:
        keys = [k for k in keys if k == wanted]
    rows = []
    counts = {"both": 0, "vault_only": 0, "neotoma_only": 0, "strength_differs": 0,
              "fields_differ": 0}
    for key in keys:
        left = vault.get(key)
        right = (live or {}).get(key)
        row: dict[str, Any] = {"identity": key, "vault": left, "neotoma": right}
        if left and right:
            counts["both"] += 1
            differs = [f for f in FIELDS if left["fields"].get(f) != right["fields"].get(f)]
            if differs:
                counts["fields_differ"] += 1
            row["fields_differ"] = differs
            row["strength_delta"] = round(right["strength"] - left["strength"], 3)
            if row["strength_delta"]:
                counts["strength_differs"] += 1
        elif left:
            counts["vault_only"] += 1
        else:
            counts["neotoma_only"] += 1
        rows.append(row)
    return {"summary": counts, "neotoma_reachable": live is not None, "rows": rows}
