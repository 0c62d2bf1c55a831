"""The prime-order group of protocol v2: ristretto255 through libsodium (pysodium).

* :func:`hash_to_group` is RFC 9497's ``HashToGroup`` for ``OPRF(ristretto255,
  SHA-512)``: RFC 9380 ``expand_message_xmd`` with SHA-512 and the DST
  ``HashToGroup-OPRFV1-\\x00-ristretto255-SHA512``, 64 bytes, fed to
  ``crypto_core_ristretto255_from_hash`` (checked against RFC 9497 A.1.1 in the tests).
* every element received from a peer goes through :func:`decode_elements`, which
  refuses wrong lengths, non-canonical encodings, the identity and duplicates.
* identifiers are normalised (``sdl_core.normalise_identifier``: NFKC, trimmed,
  lower-cased, typed prefix) before hashing, so ``Casey@Connector.com`` and
  ``casey@connector.com`` meet.

ristretto255 has prime order, so a blinded value carries no per-element bit (unlike
the quadratic-residue leak of ``dh-psi-v1``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

import pysodium  # type: ignore[import-untyped]  # no stubs upstream

from sdl_core import normalise_identifier

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
IDENTITY = bytes(ELEMENT_BYTES)

#: RFC 9497 §4.1 contextString for mode OPRF (0x00) and ristretto255-SHA512.
CONTEXT_STRING = b"OPRFV1-\x00-ristretto255-SHA512"
HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING

#: Request sizes are padded up to one of these buckets, so the padded count says
#: little about the real contact count. The largest keeps a reply under 2 MiB.
SIZE_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
MAX_ELEMENTS = SIZE_BUCKETS[-1]


class InvalidElement(ValueError):
    """A received group element is malformed, non-canonical, the identity or repeated."""


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 §5.3.1 ``expand_message_xmd`` with SHA-512 (b = 64, s = 128 bytes)."""
    b_in_bytes, s_in_bytes = 64, 128
    if len(dst) > 255:
        raise ValueError("DST longer than 255 bytes")
    ell = -(-length // b_in_bytes)
    if ell > 255 or length > 65535:
        raise ValueError("requested length too large for expand_message_xmd")
    dst_prime = dst + bytes([len(dst)])
    z_pad = bytes(s_in_bytes)
    l_i_b_str = length.to_bytes(2, "big")
    b_0 = hashlib.sha512(z_pad + msg + l_i_b_str + b"\x00" + dst_prime).digest()
    b_i = hashlib.sha512(b_0 + b"\x01" + dst_prime).digest()
    uniform = bytearray(b_i)
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b_0, b_i, strict=True))
        b_i = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        uniform += b_i
    return bytes(uniform[:length])


def hash_to_group(msg: bytes) -> bytes:
    """RFC 9497 ``HashToGroup`` for ristretto255-SHA512 (32-byte encoded element)."""
    uniform = expand_message_xmd(msg, HASH_TO_GROUP_DST, 64)
    return bytes(pysodium.crypto_core_ristretto255_from_hash(uniform))


def hash_identifier(identifier: str, kind: str = "email") -> bytes:
    """``H(x)`` of a normalised identifier (``email:casey@connector.com``)."""
    return hash_to_group(normalise_identifier(identifier, kind).encode("utf-8"))


def random_scalar() -> bytes:
    """A fresh non-zero scalar (libsodium draws uniformly in [1, l-1])."""
    return bytes(pysodium.crypto_core_ristretto255_scalar_random())


def random_element() -> bytes:
    """A uniformly random group element, used as padding."""
    return bytes(pysodium.crypto_core_ristretto255_random())


def multiply(scalar: bytes, element: bytes) -> bytes:
    """``scalar · element``; raises :class:`InvalidElement` when the result is the identity."""
    try:
        return bytes(pysodium.crypto_scalarmult_ristretto255(scalar, element))
    except ValueError as exc:  # libsodium refuses an identity result
        raise InvalidElement("scalar multiplication gave the identity") from exc


def is_valid_element(element: bytes) -> bool:
    """A canonical encoding of a non-identity ristretto255 element."""
    if len(element) != ELEMENT_BYTES or hmac.compare_digest(element, IDENTITY):
        return False
    return bool(pysodium.crypto_core_ristretto255_is_valid_point(element))


def decode_elements(blob: bytes, *, expected: int | None = None, limit: int = MAX_ELEMENTS,
                    what: str = "elements") -> list[bytes]:
    """Split a concatenation of encoded elements and validate every one.

    :raises InvalidElement: wrong length, count above ``limit`` or not ``expected``,
        an invalid or identity element, or a duplicate (honest senders never repeat:
        padding is random and own identifiers are de-duplicated before blinding).
    """
    if len(blob) % ELEMENT_BYTES:
        raise InvalidElement(f"{what}: length {len(blob)} is not a multiple of {ELEMENT_BYTES}")
    count = len(blob) // ELEMENT_BYTES
    if count == 0:
        raise InvalidElement(f"{what}: empty")
    if count > limit:
        raise InvalidElement(f"{what}: {count} elements exceed the cap of {limit}")
    if expected is not None and count != expected:
        raise InvalidElement(f"{what}: {count} elements, expected {expected}")
    out = [blob[i * ELEMENT_BYTES:(i + 1) * ELEMENT_BYTES] for i in range(count)]
    for index, element in enumerate(out):
        if not is_valid_element(element):
            raise InvalidElement(f"{what}[{index}]: not a valid non-identity ristretto255 element")
    if len(set(out)) != len(out):
        raise InvalidElement(f"{what}: duplicate elements")
    return out


def bucket_size(count: int) -> int:
    """The smallest size bucket holding ``count`` elements."""
    for size in SIZE_BUCKETS:
        if count <= size:
            return size
    raise ValueError(f"{count} elements exceed the largest bucket ({MAX_ELEMENTS})")


def blind_all(scalar: bytes, elements: Iterable[bytes]) -> list[bytes]:
    """``scalar · e`` for every element."""
    return [multiply(scalar, element) for element in elements]


def padded(elements: Sequence[bytes], size: int) -> list[bytes]:
    """``elements`` followed by random elements up to ``size``."""
    if len(elements) > size:
        raise ValueError(f"{len(elements)} elements do not fit a bucket of {size}")
    return [*elements, *(random_element() for _ in range(size - len(elements)))]
