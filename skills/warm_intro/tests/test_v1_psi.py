"""dh-psi-v1 (wire-v1.md §5) and its element checks (§10.1 items 3, 10, 11)."""

from __future__ import annotations

import secrets

import pytest
from darkmesh_warm_intro.v1 import psi
from hypothesis import given, settings
from hypothesis import strategies as st

VECTORS = {
    "casey@connector.com": "9cec52505257fc52fa0d0f44238e8a9aa891fdf2991f3a3ae828e1ab096cf929",
    "founder@startup.com": "541b999a2d4ac3164dd8d36b05deba1db05fbe4dddde9af564b5c041aa451f9",
    "blake@otherco.com": "9c6b2c9b667aace97eea48f1363d33cd281e34cca0ab36002c13a595912e6512",
    "carol@elsewhere.com": "497c793b618ad63faca64c84562ad691fce2fe90b888220702469b235fa03ffc",
}


def upstream_secret() -> int:
    """Upstream draws uniformly in [1, p-2], so about half its secrets are odd."""
    return 1 + secrets.randbelow(psi.P - 2)


@pytest.mark.parametrize(("identifier", "expected"), sorted(VECTORS.items()))
def test_hash_vectors(identifier: str, expected: str) -> None:
    assert psi.encode(psi.hash_to_int(identifier)) == expected


def test_founder_vector_has_63_digits_without_padding() -> None:
    assert len(psi.encode(psi.hash_to_int("founder@startup.com"))) == 63


def test_prime_is_rfc3526_group14_safe_prime() -> None:
    assert len(psi.P_HEX) == 512 and psi.P.bit_length() == 2048
    assert psi.P % 8 == 7
    assert psi.Q * 2 + 1 == psi.P
    # Fermat checks for p and q (not a proof, but a typo in the constant fails them).
    assert pow(3, psi.P - 1, psi.P) == 1
    assert pow(3, psi.Q - 1, psi.Q) == 1


def test_encoding_is_lowercase_without_padding() -> None:
    assert psi.encode(0) == "0"
    assert psi.encode(255) == "ff"


@pytest.mark.parametrize("text", ["ABCDEF", "00abcdef", "AbCdEf", "0000000000abcdef"])
def test_decode_accepts_any_case_and_leading_zeros(text: str) -> None:
    assert psi.decode(text) == 0xABCDEF


@pytest.mark.parametrize(
    "value",
    ["0", "1", "00001", psi.encode(psi.P - 1), psi.P_HEX, psi.encode(psi.P + 5),
     "", "0x10", "-5", " 5", "5 ", "xyz", "12g4", "1" * (psi.MAX_HEX_DIGITS + 1), 5, None,
     ["5"], "٣"],
)
def test_decode_refuses_invalid_elements(value: object) -> None:
    with pytest.raises(psi.InvalidElement):
        psi.decode(value)


def test_decode_bounds_are_inclusive() -> None:
    assert psi.decode("2") == 2
    assert psi.decode(psi.encode(psi.P - 2)) == psi.P - 2


def test_modulus_check_compares_integers() -> None:
    assert psi.is_prime_modulus(psi.P_HEX.upper())
    assert psi.is_prime_modulus("00" + psi.P_HEX)
    assert not psi.is_prime_modulus(psi.encode(psi.P - 2))
    assert not psi.is_prime_modulus(7)


def test_secrets_are_even_and_in_range() -> None:
    for _ in range(200):
        s = psi.new_secret()
        assert s % 2 == 0 and 2 <= s <= psi.P - 3


def test_some_demo_hashes_are_non_residues() -> None:
    # Makes the residue tests below meaningful: an odd secret would keep this bit.
    symbols = {psi.legendre(psi.hash_to_int(e)) for e in VECTORS}
    assert symbols == {1, psi.P - 1}


def test_requester_values_are_all_quadratic_residues() -> None:
    pairs = [(e, 0.5) for e in VECTORS] + [(f"user{i}@x.test", 0.5) for i in range(16)]
    own = psi.requester_set(pairs)
    assert all(psi.legendre(int(x, 16)) == 1 for x in own.x_values)


def test_responder_values_are_all_quadratic_residues() -> None:
    xs = [psi.blind(psi.hash_to_int(e), upstream_secret()) for e in VECTORS]
    answer = psi.responder_answer(xs, list(VECTORS))
    for value in answer.x_values_b + answer.y_values_b:
        assert psi.legendre(int(value, 16)) == 1


def test_requester_set_deduplicates_and_keeps_the_index_map() -> None:
    pairs = [("a@x.test", 0.1), ("b@x.test", 0.2), ("a@x.test", 0.7), ("c@x.test", 0.3)]
    own = psi.requester_set(pairs)
    assert len(own.x_values) == 3 and len(set(own.x_values)) == 3
    expected = {"a@x.test": 0.7, "b@x.test": 0.2, "c@x.test": 0.3}
    for value, strength in zip(own.x_values, own.strengths, strict=True):
        match = [e for e in expected if psi.encode(psi.blind(psi.hash_to_int(e), own.secret))
                 == value]
        assert len(match) == 1 and expected[match[0]] == strength


def test_requester_order_is_shuffled_per_request() -> None:
    pairs = [(f"user{i}@x.test", i / 100) for i in range(12)]
    # 12! orders: three equal draws in a row would mean no shuffling at all.
    orders = {tuple(psi.requester_set(pairs).strengths) for _ in range(3)}
    assert len(orders) > 1


def test_round_trip_with_an_upstream_responder_secret() -> None:
    own = psi.requester_set([("casey@connector.com", 0.92), ("blake@otherco.com", 0.35)])
    b = upstream_secret() | 1  # odd, as upstream often draws
    xb = [psi.encode(psi.blind(int(x, 16), b)) for x in own.x_values]
    yb = [psi.encode(psi.blind(psi.hash_to_int("casey@connector.com"), b))]
    hit = psi.intersection_index(own, xb, yb, max_y=10)
    assert hit is not None and own.strengths[hit] == 0.92


def test_round_trip_with_our_responder() -> None:
    own = psi.requester_set([("casey@connector.com", 0.92), ("blake@otherco.com", 0.35)])
    answer = psi.responder_answer([psi.decode(x) for x in own.x_values],
                                  ["nobody@x.test", "blake@otherco.com"])
    hit = psi.intersection_index(own, answer.x_values_b, answer.y_values_b, max_y=10)
    assert hit is not None and own.strengths[hit] == 0.35


def test_no_shared_identifier_means_no_hit() -> None:
    own = psi.requester_set([("casey@connector.com", 0.92)])
    answer = psi.responder_answer([psi.decode(x) for x in own.x_values], ["carol@elsewhere.com"])
    assert psi.intersection_index(own, answer.x_values_b, answer.y_values_b, max_y=10) is None


def _genuine() -> tuple[psi.RequesterSet, list[str], list[str]]:
    own = psi.requester_set([("casey@connector.com", 0.92), ("blake@otherco.com", 0.35)])
    answer = psi.responder_answer([psi.decode(x) for x in own.x_values], ["casey@connector.com"])
    return own, answer.x_values_b, answer.y_values_b


def test_forged_identity_answer_is_refused() -> None:
    # Upstream "intersects" with y_values_b = ["1"] and "1" among x_values_b.
    own, xb, _ = _genuine()
    assert psi.intersection_index(own, ["1", xb[1]], ["1"], max_y=10) is None
    minus_one = psi.encode(psi.P - 1)
    assert psi.intersection_index(own, [minus_one, xb[1]], [minus_one], max_y=10) is None


@pytest.mark.parametrize("tamper", [
    lambda xb, yb: (xb[:1], yb),                      # length mismatch
    lambda xb, yb: (xb + xb[:1], yb),                 # longer than sent
    lambda xb, yb: ([xb[0], xb[0]], yb),              # duplicates
    lambda xb, yb: ([xb[0], "zz"], yb),               # non-hex
    lambda xb, yb: ([xb[0], "0"], yb),                # zero
    lambda xb, yb: ([xb[0], psi.P_HEX], yb),          # == p
    lambda xb, yb: (xb, []),                          # empty y
    lambda xb, yb: (xb, yb * 11),                     # too many y
    lambda xb, yb: (xb, "abc"),                       # not a list
    lambda xb, yb: (None, yb),
])
def test_malformed_answers_are_refused(tamper: object) -> None:
    own, xb, yb = _genuine()
    bad_x, bad_y = tamper(xb, yb)  # type: ignore[operator]
    assert psi.intersection_index(own, bad_x, bad_y, max_y=10) is None


def test_case_and_padding_of_answers_do_not_matter() -> None:
    own, xb, yb = _genuine()
    hit = psi.intersection_index(own, ["000" + x.upper() for x in xb], [y.upper() for y in yb],
                                 max_y=10)
    assert hit is not None and own.strengths[hit] == 0.92


@settings(max_examples=8, deadline=None)
@given(
    mine=st.sets(st.emails(), min_size=1, max_size=4),
    theirs=st.sets(st.emails(), min_size=1, max_size=3),
)
def test_hit_iff_an_identifier_is_shared(mine: set[str], theirs: set[str]) -> None:
    own = psi.requester_set([(e, 0.5) for e in sorted(mine)])
    answer = psi.responder_answer([psi.decode(x) for x in own.x_values], sorted(theirs))
    hit = psi.intersection_index(own, answer.x_values_b, answer.y_values_b, max_y=10)
    assert (hit is not None) == bool(mine & theirs)
