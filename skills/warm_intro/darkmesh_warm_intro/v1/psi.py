"""``dh-psi-v1``: commutative-blinding Diffie-Hellman PSI modulo the RFC 3526 group-14 prime.

The wire format is upstream's (``wire-v1.md`` §5); the fixes of §10.1 that keep it:

* every group element received is checked: valid hex (any case, leading zeros allowed,
  compared as integers), inside ``[2, p-2]`` (``0``, ``1``, ``p-1`` and values ``>= p``
  would let a forged answer "intersect");
* secrets are even (``2k``, ``k`` uniform in ``[1, (p-1)/2 - 1]``): ``p`` is a safe prime,
  so ``x^(2k)`` is always a quadratic residue and the values *we* emit carry no
  per-element Legendre bit (item 11);
* our own identifiers are de-duplicated and shuffled before blinding (items 3 and 10);
  the caller keeps the index map.

``H`` is upstream's unsound hash (SHA-256 read as an integer); both sides must use it to
interoperate (§10.2 item 5), which is why protocol v2 exists.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

PROTOCOL = "dh-psi-v1"

#: RFC 3526 group 14, the 2048-bit MODP safe prime (``p = 2q + 1``, ``p ≡ 7 mod 8``).
P_HEX = (
    "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74"
    "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437"
    "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed"
    "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05"
    "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb"
    "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b"
    "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718"
    "3995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff"
)
P = int(P_HEX, 16)
Q = (P - 1) // 2

#: Longest hex string accepted for one element: 512 digits plus generous zero padding.
MAX_HEX_DIGITS = 1024

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class InvalidElement(ValueError):
    """A received value is not a valid group element (bad hex or outside ``[2, p-2]``)."""


def hash_to_int(identifier: str) -> int:
    """Upstream's ``H(s)``: SHA-256 of the UTF-8 bytes as a big-endian integer, mod ``p``."""
    return int.from_bytes(hashlib.sha256(identifier.encode("utf-8")).digest(), "big") % P


def encode(value: int) -> str:
    """Lowercase hex, no prefix, no leading zeros (zero is ``"0"``)."""
    return format(value, "x")


def decode(value: object) -> int:
    """Parse one received element; raise :class:`InvalidElement` unless it lies in ``[2, p-2]``.

    Any case and leading zeros are accepted (upstream emits neither, but the spec lets a
    sender use them); a ``0x`` prefix, signs, whitespace and non-strings are refused.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_HEX_DIGITS:
        raise InvalidElement("not a hex string")
    if not _HEX_DIGITS.issuperset(value):
        raise InvalidElement("not a hex string")
    number = int(value, 16)
    if not 2 <= number <= P - 2:
        raise InvalidElement("outside [2, p-2]")
    return number


def decode_all(values: object, *, max_count: int) -> list[int]:
    """Decode a non-empty list of at most ``max_count`` elements, every one valid."""
    if not isinstance(values, list) or not values or len(values) > max_count:
        raise InvalidElement("expected a non-empty, bounded list")
    return [decode(v) for v in values]


def is_prime_modulus(value: object) -> bool:
    """True when a received ``p`` (optional on the wire) is our prime, compared as integers."""
    if not isinstance(value, str) or not value or len(value) > MAX_HEX_DIGITS:
        return False
    if not _HEX_DIGITS.issuperset(value):
        return False
    return int(value, 16) == P


def new_secret() -> int:
    """An even exponent ``2k`` with ``k`` uniform in ``[1, q-1]`` (so ``2 <= 2k <= p-3``)."""
    return 2 * (1 + secrets.randbelow(Q - 1))


def blind(value: int, secret: int) -> int:
    return pow(value, secret, P)


def legendre(value: int) -> int:
    """Legendre symbol of ``value`` mod ``p``: 1 (residue), ``p-1`` (non-residue) or 0."""
    return pow(value, Q, P)


# ------------------------------------------------------------------------- requester


@dataclass(frozen=True, kw_only=True)
class RequesterSet:
    """The requester's blinded contact set, in the (shuffled) order it was sent.

    ``strengths[i]`` belongs to ``x_values[i]``; the identifiers themselves are not kept.
    """

    secret: int
    x_values: list[str]
    strengths: list[float]


def requester_set(pairs: Sequence[tuple[str, float]]) -> RequesterSet:
    """Blind ``(identifier, strength)`` pairs: de-duplicated, shuffled, even secret.

    On a duplicate identifier the last strength wins, as upstream's "last index wins"
    map would have it.
    """
    latest: dict[str, float] = {}
    for identifier, strength in pairs:
        latest.pop(identifier, None)
        latest[identifier] = strength
    items = list(latest.items())
    # A per-request permutation, so two requests cannot be linked by position.
    secrets.SystemRandom().shuffle(items)
    secret = new_secret()
    return RequesterSet(
        secret=secret,
        x_values=[encode(blind(hash_to_int(ident), secret)) for ident, _ in items],
        strengths=[strength for _, strength in items],
    )


def intersection_index(
    own: RequesterSet, x_values_b: object, y_values_b: object, *, max_y: int
) -> int | None:
    """§5 step 3 with the §10.1 checks: the index of the contact the responder is, or None.

    Refused (None): a non-list or empty list, any invalid element, ``len(x_values_b)``
    different from what we sent, duplicates among ``x_values_b`` (we sent none, so a
    duplicate can only be forged), more than ``max_y`` ``y_values_b``.
    """
    try:
        xb = decode_all(x_values_b, max_count=len(own.x_values))
        yb = decode_all(y_values_b, max_count=max_y)
    except InvalidElement:
        return None
    if len(xb) != len(own.x_values):
        return None
    index_of = {value: i for i, value in enumerate(xb)}
    if len(index_of) != len(xb):
        return None
    for y in yb:
        hit = index_of.get(blind(y, own.secret))
        if hit is not None:
            return hit
    return None


# ------------------------------------------------------------------------- responder


@dataclass(frozen=True, kw_only=True)
class ResponderAnswer:
    x_values_b: list[str]
    y_values_b: list[str]


def responder_answer(
    x_values: Sequence[int], self_identifiers: Sequence[str], secret: int | None = None
) -> ResponderAnswer:
    """§5 step 2: re-blind the requester's values (same order) and blind our identifiers.

    ``y_values_b`` is shuffled: the requester only looks values up, so order carries
    nothing it needs, and a fixed order would mirror our configuration.
    """
    b = new_secret() if secret is None else secret
    ys = [encode(blind(hash_to_int(s), b)) for s in self_identifiers]
    secrets.SystemRandom().shuffle(ys)
    return ResponderAnswer(
        x_values_b=[encode(blind(x, b)) for x in x_values],
        y_values_b=ys,
    )


def psi_block(answer: ResponderAnswer) -> dict[str, object]:
    """The ``psi`` object of a ``psi/respond`` answer."""
    return {
        "protocol": PROTOCOL,
        "p": P_HEX,
        "x_values_b": answer.x_values_b,
        "y_values_b": answer.y_values_b,
    }
