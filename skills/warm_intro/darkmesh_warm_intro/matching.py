"""Target matching, strengths and scores (``wire-v1.md`` §7), shared by v1 and v2.

Strengths are clamped to [0, 1] everywhere (§10.1 item 4), so every score lies in
[0, 1] too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdl_core import Store, clamp01, normalise_email, parse_strength

NEXT_STEP = "Ask connector to forward an intro to the target contact."


@dataclass(frozen=True, kw_only=True)
class Target:
    """A normalised target. Empty strings mean "no constraint"."""

    company: str
    role: str

    @classmethod
    def from_json(cls, value: Any) -> Target:
        data = value if isinstance(value, dict) else {}
        company = data.get("company")
        role = data.get("role")
        return cls(
            company=company.strip() if isinstance(company, str) else "",
            role=role.strip() if isinstance(role, str) else "",
        )

    @property
    def empty(self) -> bool:
        return not self.company and not self.role

    def key(self) -> str:
        """The normalised form stored with reveal tokens and compared on reveal."""
        return f"{self.company.lower()}\x1f{self.role.lower()}"

    def to_json(self) -> dict[str, str | None]:
        return {"company": self.company or None, "role": self.role or None}


@dataclass(frozen=True, kw_only=True)
class Contact:
    """A contact with its effective strength (interactions override contacts)."""

    index: int
    name: str | None
    email: str
    org: str | None
    role: str | None
    strength: float

    def matches(self, target: Target) -> bool:
        org = (self.org or "").lower()
        role = (self.role or "").lower()
        company_ok = not target.company or target.company.lower() in org
        role_ok = not target.role or target.role.lower() in role
        return company_ok and role_ok

    def intro_contact(self) -> dict[str, str | None]:
        return {"name": self.name, "email": self.email, "org": self.org, "role": self.role}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


async def load_contacts(store: Store) -> list[Contact]:
    """Contacts in dataset order with §7.2 effective strengths, clamped to [0, 1].

    The last ``interactions`` record for an email wins; else the contact's own
    ``strength``; else 0.5.
    """
    overrides: dict[str, float] = {}
    async for record in store.iterate("interactions"):
        email = normalise_email(record.get("email"))
        if email:
            overrides[email] = parse_strength(record.get("strength"))
    contacts: list[Contact] = []
    index = 0
    async for record in store.iterate("contacts"):
        email = normalise_email(record.get("email"))
        if email in overrides:
            strength = overrides[email]
        else:
            strength = parse_strength(record.get("strength"))
        contacts.append(
            Contact(
                index=index,
                name=_text(record.get("name")),
                email=email,
                org=_text(record.get("org")),
                role=_text(record.get("role")),
                strength=clamp01(strength),
            )
        )
        index += 1
    return contacts


def target_strength(contacts: list[Contact], target: Target) -> float | None:
    """Responder's ``max(0.5, strength of each matching contact)``; None if none match."""
    matching = [c.strength for c in contacts if c.matches(target)]
    if not matching:
        return None
    return max([0.5, *matching])


def choose_contact(contacts: list[Contact], target: Target) -> Contact | None:
    """§7.3: the strongest matching contact in dataset order; a tie goes to the later."""
    best: Contact | None = None
    for contact in contacts:
        if contact.matches(target) and (best is None or contact.strength >= best.strength):
            best = contact
    return best


def score(local_strength: float, target_strength_value: float) -> float:
    """``0.6 × local + 0.4 × target``, both clamped to [0, 1]."""
    return 0.6 * clamp01(local_strength) + 0.4 * clamp01(target_strength_value)
