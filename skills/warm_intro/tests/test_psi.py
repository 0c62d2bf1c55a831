"""ristretto255 group of protocol v2: RFC 9497 vectors, validation, the exchange."""

from __future__ import annotations

import pysodium
import pytest
from darkmesh_warm_intro import psi
from darkmesh_warm_intro.v2 import exchange
from hypothesis import given, settings
from hypothesis import strategies as st

# RFC 9497 A.1.1, OPRF(ristretto255, SHA-512), mode OPRF: BlindedElement = Blind·HashToGroup(Input).
RFC9497_BLIND = bytes.fromhex("64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706")
RFC9497_VECTORS = [
    ("00", "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c"),
    ("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
     "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418"),
]


@pytest.mark.parametrize(("message", "blinded"), RFC9497_VECTORS)
def test_hash_to_group_matches_rfc9497_a11(message: str, blinded: str) -> None:
    element = psi.hash_to_group(bytes.fromhex(message))
    assert psi.multiply(RFC9497_BLIND, element).hex() == blinded


def test_dst_is_the_rfc_one() -> None:
    assert psi.HASH_TO_GROUP_DST == b"HashToGroup-OPRFV1-\x00-ristretto255-SHA512"


def test_expand_message_xmd_rfc9380_k1_sha512_vector() -> None:
    # RFC 9380 K.3, expand_message_xmd(SHA-512), DST QUUX-V01-CS02-with-expander-SHA512-256,
    # msg "", len_in_bytes 0x20.
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    out = psi.expand_message_xmd(b"", dst, 0x20)
    assert out.hex() == "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"


def test_identifiers_are_normalised_before_hashing() -> None:
    casey = psi.hash_identifier("casey@connector.com")
    assert psi.hash_identifier(" Casey@Connector.COM ") == casey
    # NFKC: a full-width letter folds to ASCII.
    assert psi.hash_identifier("\uff43asey@connector.com") == casey
    assert psi.hash_identifier("casey@connector.com") != psi.hash_identifier("carol@elsewhere.com")


def test_identity_is_refused() -> None:
    assert not psi.is_valid_element(psi.IDENTITY)
    with pytest.raises(psi.InvalidElement, match="not a valid non-identity"):
        psi.decode_elements(psi.random_element() + psi.IDENTITY)


def test_non_canonical_and_short_encodings_are_refused() -> None:
    # 2^255 - 18 is p - 1 + ... : the top bit set is never canonical for ristretto255.
    non_canonical = bytes([0xFF] * 32)
    assert not psi.is_valid_element(non_canonical)
    with pytest.raises(psi.InvalidElement, match="not a valid"):
        psi.decode_elements(non_canonical)
    with pytest.raises(psi.InvalidElement, match="not a multiple of 32"):
        psi.decode_elements(b"\x01" * 33)
    with pytest.raises(psi.InvalidElement, match="empty"):
        psi.decode_elements(b"")


def test_negative_field_element_encoding_is_refused() -> None:
    # A canonical ristretto255 encoding has an even (non-negative) field element: flip the
    # low bit of a valid encoding and it must be refused.
    element = bytearray(psi.random_element())
    element[0] ^= 1
    assert not psi.is_valid_element(bytes(element))


def test_duplicates_and_caps_are_refused() -> None:
    element = psi.random_element()
    with pytest.raises(psi.InvalidElement, match="duplicate"):
        psi.decode_elements(element + element)
    blob = b"".join(psi.random_element() for _ in range(5))
    with pytest.raises(psi.InvalidElement, match="exceed the cap of 4"):
        psi.decode_elements(blob, limit=4)
    with pytest.raises(psi.InvalidElement, match="expected 8"):
        psi.decode_elements(blob, expected=8)


def test_fresh_scalars_differ_and_blinding_commutes() -> None:
    a, b = psi.random_scalar(), psi.random_scalar()
    assert a != b
    h = psi.hash_identifier("casey@connector.com")
    assert psi.multiply(a, psi.multiply(b, h)) == psi.multiply(b, psi.multiply(a, h))


def test_buckets() -> None:
    assert psi.bucket_size(1) == 16
    assert psi.bucket_size(17) == 32
    assert psi.bucket_size(2000) == 2048
    with pytest.raises(ValueError, match="exceed the largest bucket"):
        psi.bucket_size(psi.MAX_ELEMENTS + 1)


def _run_exchange(contacts: list[str], identifiers: list[str]) -> set[str]:
    """R with ``contacts`` against S with ``identifiers``: which contacts R learns."""
    blinded = exchange.blind_contacts([(c, 0.5 + i / 1000) for i, c in enumerate(contacts)],
                                      limit=psi.MAX_ELEMENTS)
    context = exchange.binding("req", "node_r", "node_s")
    elements = psi.decode_elements(blinded.elements)
    reply = exchange.build_reply(elements=elements, own_identifiers=identifiers,
                                 payload={"match": True, "who": "s"}, context=context)
    match = exchange.open_reply(scalar=blinded.scalar, real_count=blinded.real_count,
                                padded_count=len(elements), y_blob=reply.y_blob,
                                entries=reply.entries, ciphertext=reply.ciphertext,
                                context=context)
    if match is None:
        return set()
    strength = blinded.strengths[match.index]
    return {c for i, c in enumerate(contacts) if abs((0.5 + i / 1000) - strength) < 1e-12}


emails = st.from_regex(r"[a-e]{1,3}@[x-z]{1,2}\.com", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(contacts=st.lists(emails, min_size=1, max_size=12, unique=True),
       identifiers=st.lists(emails, min_size=0, max_size=3, unique=True))
def test_exchange_finds_exactly_the_true_intersection(contacts: list[str],
                                                      identifiers: list[str]) -> None:
    learned = _run_exchange(contacts, identifiers)
    truth = set(contacts) & set(identifiers)
    if not truth:
        assert learned == set()
    else:
        # R learns one contact S is (the first of S's identifiers it finds), never a non-member.
        assert len(learned) == 1 and learned <= truth


def test_unconnected_requester_cannot_open_anything() -> None:
    blinded = exchange.blind_contacts([("blake@otherco.com", 0.4)], limit=16)
    context = exchange.binding("req", "node_r", "node_s")
    reply = exchange.build_reply(elements=psi.decode_elements(blinded.elements),
                                 own_identifiers=["casey@connector.com"],
                                 payload={"match": True}, context=context)
    assert exchange.open_reply(scalar=blinded.scalar, real_count=1, padded_count=16,
                               y_blob=reply.y_blob, entries=reply.entries,
                               ciphertext=reply.ciphertext, context=context) is None


def test_reply_is_bound_to_its_context() -> None:
    blinded = exchange.blind_contacts([("casey@connector.com", 0.9)], limit=16)
    reply = exchange.build_reply(elements=psi.decode_elements(blinded.elements),
                                 own_identifiers=["casey@connector.com"], payload={"match": True},
                                 context=exchange.binding("req", "node_r", "node_s"))
    # The same bytes presented as another responder's reply derive other tags: no match.
    assert exchange.open_reply(scalar=blinded.scalar, real_count=1, padded_count=16,
                               y_blob=reply.y_blob, entries=reply.entries,
                               ciphertext=reply.ciphertext,
                               context=exchange.binding("req", "node_r", "node_x")) is None


def test_reply_shape_is_independent_of_the_data() -> None:
    blinded = exchange.blind_contacts([("casey@connector.com", 0.9)], limit=16)
    elements = psi.decode_elements(blinded.elements)
    context = exchange.binding("req", "node_r", "node_s")
    matched = exchange.build_reply(elements=elements, own_identifiers=["casey@connector.com"],
                                   payload={"match": True, "pseudonym_id": "p_0123456789abcdef",
                                            "reveal_token": "t" * 32, "target_strength": 0.88},
                                   context=context)
    unmatched = exchange.build_reply(elements=elements, own_identifiers=[],
                                     payload={"match": False}, context=context)
    for left, right in ((matched.y_blob, unmatched.y_blob), (matched.entries, unmatched.entries),
                        (matched.ciphertext, unmatched.ciphertext)):
        assert len(left) == len(right)


def test_padding_elements_are_valid_points() -> None:
    blob = b"".join(psi.padded([], 16))
    assert len(psi.decode_elements(blob)) == 16
    real = psi.random_element()
    out = psi.padded([real], 4)
    assert out[0] == real and len(set(out)) == 4
    assert all(pysodium.crypto_core_ristretto255_is_valid_point(e) for e in out)
