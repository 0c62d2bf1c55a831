"""End-to-end sealed, sender-authenticated mailbox messages of protocol v2.

Each v2 node keeps a long-term X25519 key pair in its state area. A message from S
to R is sealed like a one-way Noise ``X`` pattern:

* S draws an ephemeral key ``e``; ``ikm = DH(e, R) || DH(S, R)`` (ephemeral-static
  for forward secrecy against a later leak of S's key, static-static to
  authenticate S: only the holder of S's private key, or R, can compute it);
* ``key = HKDF-SHA256(ikm, salt = e_pub || S_pub || R_pub, info = "darkmesh-v2-seal")``;
* ChaCha20-Poly1305 with a random nonce; the associated data binds the version,
  sender node id, recipient node id, request id, message kind and all three public
  keys, so a message cannot be re-addressed, replayed into another request or
  attributed to another sender.

Public keys are pinned per node id on first contact (:class:`KeyPins`); a changed
key is refused until the operator accepts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sdl_core import StateArea

SEAL_VERSION = 1
SEAL_INFO = b"darkmesh-v2-seal"
KEY_STATE = "v2:identity_key"
PIN_PREFIX = "v2:pin:"
PIN_CHANGE_PREFIX = "v2:pin-change:"
SEEN_PREFIX = "v2:seen:"
MESSAGE_KINDS = ("psi_reply", "refusal", "reveal_request", "reveal_response")


class SealError(ValueError):
    """A sealed message cannot be opened or is not acceptable; ``reason`` is stable."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(value: Any, what: str, *, length: int | None = None, limit: int | None = None) -> bytes:
    """Strict base64; raises :class:`SealError` (``malformed``) naming ``what``."""
    if not isinstance(value, str):
        raise SealError("malformed", f"{what} must be a base64 string")
    if limit is not None and len(value) > limit:
        raise SealError("malformed", f"{what} is longer than {limit} characters")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SealError("malformed", f"{what} is not valid base64") from None
    if length is not None and len(data) != length:
        raise SealError("malformed", f"{what} must be {length} bytes")
    return data


def fingerprint(public_key: bytes) -> str:
    """Operator-facing fingerprint: SHA-256 of the raw key, 16 hex groups of 4."""
    digest = hashlib.sha256(b"darkmesh-v2-key" + public_key).hexdigest()[:32]
    return ":".join(digest[i:i + 4] for i in range(0, 32, 4))


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class NodeKeys:
    """This node's long-term X25519 key pair."""

    private: X25519PrivateKey

    @property
    def public(self) -> bytes:
        return _raw_public(self.private.public_key())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, state: StateArea) -> NodeKeys:
        """The key pair kept in the node database, created once (atomically)."""
        fresh = X25519PrivateKey.generate()
        raw = fresh.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        state.put_if_absent(KEY_STATE, {"private": b64e(raw), "created_at": time.time()})
        stored = state.get(KEY_STATE)
        return cls(X25519PrivateKey.from_private_bytes(b64d(stored["private"], "stored key")))


def _associated_data(header: dict[str, Any], recipient_key: bytes) -> bytes:
    bound = {**header, "recipient_key": b64e(recipient_key)}
    return json.dumps(bound, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _derive(ikm: bytes, eph: bytes, sender: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + sender + recipient,
                info=SEAL_INFO).derive(ikm)


def seal(
    keys: NodeKeys, *, sender: str, recipient: str, recipient_key: bytes, request_id: str,
    kind: str, body: dict[str, Any],
) -> bytes:
    """Seal ``body`` to ``recipient_key``, authenticated by ``keys``; the mailbox payload."""
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    recipient_pub = X25519PublicKey.from_public_bytes(recipient_key)
    ephemeral = X25519PrivateKey.generate()
    eph_pub = _raw_public(ephemeral.public_key())
    ikm = ephemeral.exchange(recipient_pub) + keys.private.exchange(recipient_pub)
    key = _derive(ikm, eph_pub, keys.public, recipient_key)
    header = {
        "v": SEAL_VERSION, "from": sender, "to": recipient, "request_id": request_id,
        "kind": kind, "sender_key": b64e(keys.public), "eph": b64e(eph_pub),
    }
    nonce = os.urandom(12)
    plaintext = json.dumps(body, separators=(",", ":")).encode("utf-8")
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, plaintext,
                                               _associated_data(header, recipient_key))
    envelope = {**header, "nonce": b64e(nonce), "ct": b64e(ciphertext)}
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, kw_only=True)
class Opened:
    """An opened, authenticated message."""

    sender: str
    sender_key: bytes
    request_id: str
    kind: str
    body: dict[str, Any]
    message_id: str  # hash of the ephemeral key: replays of one message share it


def open_sealed(keys: NodeKeys, payload: bytes, *, recipient: str) -> Opened:
    """Open a payload sealed to this node. Does not check pins (see :class:`KeyPins`).

    :raises SealError: ``malformed`` (shape), ``misaddressed`` (another recipient),
        ``undecryptable`` (wrong key, forged or altered).
    """
    try:
        envelope = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise SealError("malformed", "payload is not JSON") from None
    if not isinstance(envelope, dict):
        raise SealError("malformed", "payload is not a JSON object")
    if envelope.get("v") != SEAL_VERSION:
        raise SealError("malformed", f"unsupported seal version {envelope.get('v')!r}")
    fields = {}
    for name in ("from", "to", "request_id", "kind"):
        value = envelope.get(name)
        if not isinstance(value, str) or not value or len(value) > 128:
            raise SealError("malformed", f"field {name!r} must be a non-empty string")
        fields[name] = value
    if fields["kind"] not in MESSAGE_KINDS:
        raise SealError("malformed", f"unknown message kind {fields['kind']!r}")
    if fields["to"] != recipient:
        raise SealError("misaddressed", f"sealed to {fields['to']!r}, not {recipient!r}")
    sender_key = b64d(envelope.get("sender_key"), "sender_key", length=32)
    eph = b64d(envelope.get("eph"), "eph", length=32)
    nonce = b64d(envelope.get("nonce"), "nonce", length=12)
    ciphertext = b64d(envelope.get("ct"), "ct")
    header = {"v": SEAL_VERSION, **fields, "sender_key": envelope["sender_key"],
              "eph": envelope["eph"]}
    try:
        sender_pub = X25519PublicKey.from_public_bytes(sender_key)
        eph_pub = X25519PublicKey.from_public_bytes(eph)
        ikm = keys.private.exchange(eph_pub) + keys.private.exchange(sender_pub)
    except ValueError:  # low-order points make cryptography refuse the exchange
        raise SealError("undecryptable", "invalid public key") from None
    key = _derive(ikm, eph, sender_key, keys.public)
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(nonce, ciphertext,
                                                  _associated_data(header, keys.public))
    except InvalidTag:
        raise SealError("undecryptable", "authentication failed (forged or altered)") from None
    body = json.loads(plaintext)
    if not isinstance(body, dict):
        raise SealError("malformed", "sealed body is not a JSON object")
    return Opened(sender=fields["from"], sender_key=sender_key, request_id=fields["request_id"],
                  kind=fields["kind"], body=body,
                  message_id=hashlib.sha256(eph + nonce).hexdigest()[:32])


class KeyPins:
    """Trust-on-first-use pins of peers' v2 public keys, per node id, in the state area."""

    def __init__(self, state: StateArea) -> None:
        self.state = state

    def pinned(self, node_id: str) -> bytes | None:
        entry = self.state.get(PIN_PREFIX + node_id)
        return b64d(entry["key"], "pinned key") if entry else None

    def check(self, node_id: str, key: bytes) -> bool:
        """Whether ``key`` is the pinned key of ``node_id``; False when none is pinned yet.

        A different key is recorded for the operator (``pending_changes``) and refused
        with reason ``key_changed`` until :meth:`accept`. Nothing is pinned here: callers
        :meth:`pin` once the message that carried the key was accepted, so a refused
        message leaves no pin behind.
        """
        pinned = self.pinned(node_id)
        if pinned is None:
            return False
        if pinned == key:
            return True
        self.state.put(PIN_CHANGE_PREFIX + node_id,
                       {"key": b64e(key), "fingerprint": fingerprint(key), "seen_at": time.time()})
        raise SealError(
            "key_changed",
            f"node {node_id!r} presented key {fingerprint(key)}, pinned is "
            f"{fingerprint(pinned)}; the operator must accept the change",
        )

    def pin(self, node_id: str, key: bytes) -> None:
        """Pin ``key`` on first contact (a no-op when a pin exists)."""
        entry = {"key": b64e(key), "fingerprint": fingerprint(key), "pinned_at": time.time()}
        self.state.put_if_absent(PIN_PREFIX + node_id, entry)

    def accept(self, node_id: str) -> dict[str, Any] | None:
        """Accept the pending key change of ``node_id``; returns the new pin or None."""
        change = self.state.get(PIN_CHANGE_PREFIX + node_id)
        if change is None:
            return None
        pin = {"key": change["key"], "fingerprint": change["fingerprint"],
               "pinned_at": time.time()}
        self.state.put(PIN_PREFIX + node_id, pin)
        self.state.delete(PIN_CHANGE_PREFIX + node_id)
        return {"node_id": node_id, "fingerprint": pin["fingerprint"]}

    def listing(self) -> dict[str, Any]:
        pins = [
            {"node_id": key[len(PIN_PREFIX):], "fingerprint": value["fingerprint"],
             "pinned_at": value["pinned_at"]}
            for key, value in self.state.items(PIN_PREFIX)
        ]
        changes = [
            {"node_id": key[len(PIN_CHANGE_PREFIX):], "fingerprint": value["fingerprint"],
             "seen_at": value["seen_at"]}
            for key, value in self.state.items(PIN_CHANGE_PREFIX)
        ]
        return {"pinned": pins, "pending_changes": changes}


def is_v2_envelope(payload_b64: str) -> bool:
    """Whether a mailbox payload looks like a v2 sealed envelope (cheap, no crypto)."""
    try:
        envelope = json.loads(base64.b64decode(payload_b64.encode("ascii"), validate=True))
    except (binascii.Error, UnicodeError, ValueError, AttributeError):
        return False
    return (isinstance(envelope, dict) and envelope.get("v") == SEAL_VERSION
            and envelope.get("kind") in MESSAGE_KINDS and "ct" in envelope)
