"""The v2 PSI exchange (DESIGN §6 item 2), as pure functions over bytes.

Requester R, secret ``a``, broadcasts ``a·H(x_i)`` for its contacts, shuffled and
padded to a size bucket with random elements. Responder S, fresh ``b`` per reply,
answers with:

* ``Y``: its own identifiers blinded once, ``b·H(y_j)``, padded to
  :data:`Y_ELEMENTS` with random elements and shuffled;
* ``T``: for every ``i`` in R's order, a 16-byte tag and a 32-byte wrapped payload
  key, both from ``HKDF(b·a·H(x_i))`` (S never sends ``ab·H(x_i)`` itself);
* ``C``: one AEAD ciphertext of a fixed-length payload under a fresh random key.

R computes ``a·Y_j`` for the few ``Y_j`` only, looks the derived tags up in ``T``
(learning which of its contacts S is) and unwraps the payload key. Every KDF and
the AEAD bind the request id, the requester and the responder, so a reply cannot be
moved to another request or attributed to another responder. A requester sharing
no identifier with S cannot derive any tag or key: it sees uniformly random bytes of
the same length whatever S's data (the tests check this).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from darkmesh_warm_intro import psi

PROTOCOL = "ristretto255-psi-v2"
#: Responder identifiers are padded to this many elements (at most this many are used).
Y_ELEMENTS = 8
TAG_BYTES = 16
KEY_BYTES = 32
ENTRY_BYTES = TAG_BYTES + KEY_BYTES
#: Payload plaintexts are padded to this length so every ciphertext has one size.
PAYLOAD_BYTES = 192
_NONCE = bytes(12)  # each payload key encrypts exactly one message


def binding(request_id: str, requester_id: str, responder_id: str) -> bytes:
    """Context bound into every tag, key and ciphertext of one reply."""
    parts = (b"darkmesh-v2-psi", request_id.encode(), requester_id.encode(),
             responder_id.encode())
    return b"\x00".join(parts)


def _entry_key(shared: bytes, context: bytes) -> tuple[bytes, bytes]:
    material = HKDF(algorithm=hashes.SHA512(), length=ENTRY_BYTES, salt=None,
                    info=b"darkmesh-v2-entry\x00" + context).derive(shared)
    return material[:TAG_BYTES], material[TAG_BYTES:]


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(left, right, strict=True))


# ------------------------------------------------------------------- requester


@dataclass(frozen=True, kw_only=True)
class BlindedContacts:
    """What R keeps secret (``scalar``, ``strengths`` by position) and broadcasts."""

    scalar: bytes
    elements: bytes  # concatenation, padded to a bucket
    real_count: int
    strengths: list[float]  # strength of the contact at each real position


def blind_contacts(contacts: list[tuple[str, float]], *, limit: int) -> BlindedContacts:
    """Blind de-duplicated identifiers in a fresh random order, padded to a bucket.

    :raises ValueError: more contacts than ``limit`` (or the largest bucket).
    """
    unique: dict[bytes, float] = {}
    for identifier, strength in contacts:
        point = psi.hash_identifier(identifier)
        unique[point] = max(strength, unique.get(point, 0.0))
    cap = min(limit, psi.MAX_ELEMENTS)
    if len(unique) > cap:
        raise ValueError(f"{len(unique)} contacts exceed the cap of {cap} (max_contacts)")
    order = list(unique.items())
    secrets.SystemRandom().shuffle(order)  # positions must not link requests
    scalar = psi.random_scalar()
    blinded = psi.blind_all(scalar, (point for point, _ in order))
    size = psi.bucket_size(max(1, len(order)))
    return BlindedContacts(
        scalar=scalar,
        elements=b"".join(psi.padded(blinded, size)),
        real_count=len(order),
        strengths=[strength for _, strength in order],
    )


@dataclass(frozen=True, kw_only=True)
class Match:
    index: int
    payload: dict[str, Any]


def open_reply(
    *, scalar: bytes, real_count: int, padded_count: int, y_blob: bytes, entries: bytes,
    ciphertext: bytes, context: bytes,
) -> Match | None:
    """R's side: find the contact S is (if any) and decrypt the payload.

    :raises psi.InvalidElement: malformed ``Y`` or entry table (the reply is refused).
    """
    y_elements = psi.decode_elements(y_blob, expected=Y_ELEMENTS, what="y")
    if len(entries) != padded_count * ENTRY_BYTES:
        raise psi.InvalidElement(
            f"entries: {len(entries)} bytes, expected {padded_count * ENTRY_BYTES}"
        )
    if len(ciphertext) != PAYLOAD_BYTES + 16:
        raise psi.InvalidElement("payload ciphertext has the wrong length")
    tags = {entries[i * ENTRY_BYTES:i * ENTRY_BYTES + TAG_BYTES]: i for i in range(real_count)}
    for element in y_elements:
        tag, mask = _entry_key(psi.multiply(scalar, element), context)
        index = tags.get(tag)
        if index is None:
            continue
        start = index * ENTRY_BYTES + TAG_BYTES
        payload_key = _xor(entries[start:start + KEY_BYTES], mask)
        try:
            plaintext = ChaCha20Poly1305(payload_key).decrypt(_NONCE, ciphertext, context)
        except InvalidTag:
            raise psi.InvalidElement("payload does not decrypt under the matched key") from None
        payload = json.loads(plaintext.rstrip(b" "))
        if not isinstance(payload, dict):
            raise psi.InvalidElement("payload is not a JSON object")
        return Match(index=index, payload=payload)
    return None


# ------------------------------------------------------------------- responder


@dataclass(frozen=True, kw_only=True)
class Reply:
    y_blob: bytes
    entries: bytes
    ciphertext: bytes


def encode_payload(payload: dict[str, Any]) -> bytes:
    raw = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    if len(raw) > PAYLOAD_BYTES:
        raise ValueError("payload too long")
    return raw + b" " * (PAYLOAD_BYTES - len(raw))


def build_reply(
    *, elements: list[bytes], own_identifiers: list[str], payload: dict[str, Any],
    context: bytes,
) -> Reply:
    """S's side, with a fresh scalar ``b``; ``elements`` are already validated."""
    scalar = psi.random_scalar()
    own = list(dict.fromkeys(psi.hash_identifier(i) for i in own_identifiers))[:Y_ELEMENTS]
    y_elements = psi.padded(psi.blind_all(scalar, own), Y_ELEMENTS)
    secrets.SystemRandom().shuffle(y_elements)
    payload_key = os.urandom(KEY_BYTES)
    table = bytearray()
    for element in elements:
        tag, mask = _entry_key(psi.multiply(scalar, element), context)
        table += tag + _xor(payload_key, mask)
    ciphertext = ChaCha20Poly1305(payload_key).encrypt(_NONCE, encode_payload(payload), context)
    return Reply(y_blob=b"".join(y_elements), entries=bytes(table), ciphertext=ciphertext)


