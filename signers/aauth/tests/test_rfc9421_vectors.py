"""RFC 9421 Appendix B: every base rebuilt byte for byte, every signature verified, the
deterministic ones (B.2.5 hmac-sha256, B.2.6 ed25519) re-signed to the identical value.

Ed25519 and ECDSA P-256 are verified by the profile's own ``keys.verify_raw``, the function
the verifier calls; RSA and HMAC, which the profile does not accept, by the reference
helpers below (they are here only because the RFC's vectors use them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from darkmesh_aauth.keys import (
    Algorithm,
    ecdsa_der_to_raw,
    signing_key_from_jwk,
    thumbprint,
    verify_raw,
)
from darkmesh_aauth.rfc9421 import Component, ComponentError, Message, signature_base
from darkmesh_aauth.sfv import SFError, parse_dictionary, serialize_member

# A copy of spec/rfc9421_vectors.json, so the distribution tests alone.
VECTORS = json.loads((Path(__file__).parent / "data" / "rfc9421_vectors.json").read_text())
IDS = [v["section"] for v in VECTORS["vectors"]]


# ------------------------------------------------------------ reference algorithms

#: The profile's algorithms, by their RFC 9421 names.
PROFILE_ALGORITHMS: dict[str, Algorithm] = {"ed25519": "Ed25519", "ecdsa-p256-sha256": "ES256"}


def parse_signature_input_member(value: str, label: str) -> tuple[list[Component], str]:
    """Components and the exact ``@signature-params`` value of one Signature-Input member."""
    try:
        member = parse_dictionary(value).get(label)
    except SFError as exc:
        raise ComponentError(f"Signature-Input is malformed: {exc}") from None
    if member is None or not isinstance(member[0], list):
        raise ComponentError(f"Signature-Input has no inner list {label!r}")
    components = []
    for item, params in member[0]:
        if not isinstance(item, str):
            raise ComponentError("component identifiers are Strings")
        components.append((item, dict(params)))
    return components, serialize_member(member)


def sign(algorithm: str, key: Any, base: bytes) -> bytes:
    """Sign ``base`` with an RFC 9421 algorithm (``key``: a cryptography key or HMAC bytes)."""
    if algorithm == "ed25519":
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(base)
    if algorithm == "ecdsa-p256-sha256":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return ecdsa_der_to_raw(key.sign(base, ec.ECDSA(hashes.SHA256())))
    if algorithm == "hmac-sha256":
        return hmac.new(bytes(key), base, hashlib.sha256).digest()
    if algorithm == "rsa-pss-sha512":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(base, padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64),
                        hashes.SHA512())
    if algorithm == "rsa-v1_5-sha256":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(base, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def verify(algorithm: str, key: Any, base: bytes, signature: bytes) -> bool:
    """Verify ``signature`` over ``base``; False on any mismatch."""
    if algorithm in PROFILE_ALGORITHMS:
        return verify_raw(key, PROFILE_ALGORITHMS[algorithm], signature, base)
    try:
        if algorithm == "hmac-sha256":
            expected = hmac.new(bytes(key), base, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        elif algorithm == "rsa-pss-sha512":
            key.verify(signature, base,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64),
                       hashes.SHA512())
        elif algorithm == "rsa-v1_5-sha256":
            key.verify(signature, base, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise AssertionError(f"no reference for {algorithm!r}")
    except (InvalidSignature, ValueError):
        return False
    return True


def message_for(name: str) -> Message:
    spec = VECTORS["messages"][name]
    headers = [tuple(h) for h in spec["headers"]]
    if "status" in spec:
        request = message_for("test-request")
        return Message(status=spec["status"], headers=headers, request=request)
    return Message.from_url(spec["method"], spec["url"], headers)


def keys_for(vector: dict[str, Any]) -> tuple[Any, Any]:
    """(private, public) key objects for a vector's key id."""
    spec = VECTORS["keys"][vector["keyid"]]
    if vector["alg"] == "hmac-sha256":
        secret = base64.b64decode(spec["secret_base64"])
        return secret, secret
    private_pem = spec["private_pem"].encode()
    public_pem = spec["public_pem"].encode()
    public = serialization.load_pem_public_key(public_pem)
    private = serialization.load_pem_private_key(private_pem, password=None)
    return private, public


def components_of(vector: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    return parse_signature_input_member(vector["signature_input"], vector["label"])


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=IDS)
def test_signature_base_is_rebuilt_byte_for_byte(vector: dict[str, Any]) -> None:
    components, params_value = components_of(vector)
    base = signature_base(message_for(vector["message"]), components, params_value)
    assert base == vector["signature_base"]
    assert not base.endswith("\n")


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=IDS)
def test_signature_verifies(vector: dict[str, Any]) -> None:
    _, public = keys_for(vector)
    signature = parse_dictionary(vector["signature"])[vector["label"]][0]
    base = vector["signature_base"].encode()
    assert verify(vector["alg"], public, base, signature)
    tampered = base.replace(b"example.com", b"example.org") if b"example.com" in base \
        else base + b"x"
    assert not verify(vector["alg"], public, tampered, signature)


@pytest.mark.parametrize("vector", [v for v in VECTORS["vectors"] if v["deterministic"]],
                         ids=[v["section"] for v in VECTORS["vectors"] if v["deterministic"]])
def test_deterministic_vectors_re_sign_identically(vector: dict[str, Any]) -> None:
    private, _ = keys_for(vector)
    components, params_value = components_of(vector)
    base = signature_base(message_for(vector["message"]), components, params_value)
    expected = parse_dictionary(vector["signature"])[vector["label"]][0]
    assert sign(vector["alg"], private, base.encode()) == expected


def test_randomised_algorithms_sign_and_verify_with_the_rfc_keys() -> None:
    for vector in VECTORS["vectors"]:
        if vector["deterministic"]:
            continue
        private, public = keys_for(vector)
        base = vector["signature_base"].encode()
        assert verify(vector["alg"], public, base, sign(vector["alg"], private, base))


def test_ed25519_test_key_through_the_profile_key_loader() -> None:
    jwk = VECTORS["keys"]["test-key-ed25519"]["jwk"]
    key = signing_key_from_jwk(jwk)
    vector = next(v for v in VECTORS["vectors"] if v["section"] == "B.2.6")
    expected = parse_dictionary(vector["signature"])[vector["label"]][0]
    assert key.sign(vector["signature_base"].encode()) == expected
    # The thumbprint quoted in aauth.md §1.1 and §3 is this key's.
    assert thumbprint(jwk) == "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"
    assert key.kid == "test-key-ed25519"


def test_es256_test_key_loads_and_its_signatures_verify() -> None:
    jwk = VECTORS["keys"]["test-key-ecc-p256"]["jwk"]
    key = signing_key_from_jwk(jwk)
    vector = next(v for v in VECTORS["vectors"] if v["section"] == "B.3")
    _, public = keys_for(vector)
    base = vector["signature_base"].encode()
    assert verify("ecdsa-p256-sha256", public, base, key.sign(base))


def test_rsa_keys_are_really_rsa() -> None:
    vector = VECTORS["vectors"][0]
    private, public = keys_for(vector)
    assert isinstance(private, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey)


def test_query_param_absent_or_repeated_is_an_error() -> None:
    message = Message.from_url("GET", "https://example.com/?a=1&a=2&b=3")
    with pytest.raises(ComponentError):
        signature_base(message, [("@query-param", {"name": "a"})], "()")
    with pytest.raises(ComponentError):
        signature_base(message, [("@query-param", {"name": "zz"})], "()")
    assert signature_base(message, [("@query-param", {"name": "b"})], "()") == \
        '"@query-param";name="b": 3\n"@signature-params": ()'


def test_header_component_parameters() -> None:
    message = Message.from_url("GET", "https://example.com/", [
        ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
        ("Example-Header", "value, with, lots"),
        ("Example-Header", "of, commas"),
    ])
    assert signature_base(message, [("example-dict", {"sf": True})], "()").splitlines()[0] == \
        '"example-dict";sf: a=1, b=2;x=1;y=2, c=(a b c)'
    assert signature_base(message, [("example-dict", {"key": "b"})], "()").splitlines()[0] == \
        '"example-dict";key="b": 2;x=1;y=2'
    assert signature_base(message, [("example-header", {"bs": True})], "()").splitlines()[0] == \
        '"example-header";bs: :dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:'
    assert signature_base(message, [("example-header", {})], "()").splitlines()[0] == \
        '"example-header": value, with, lots, of, commas'


def test_derived_components_of_a_request() -> None:
    message = Message.from_url("POST", "https://www.example.com:443/path?param=value&foo=bar")
    lines = signature_base(message, [(n, {}) for n in (
        "@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path",
        "@query")], "()").splitlines()
    assert lines[:7] == [
        '"@method": POST',
        '"@target-uri": https://www.example.com/path?param=value&foo=bar',
        '"@authority": www.example.com',
        '"@scheme": https',
        '"@request-target": /path?param=value&foo=bar',
        '"@path": /path',
        '"@query": ?param=value&foo=bar',
    ]
    assert signature_base(Message.from_url("GET", "https://a.example/p"), [("@query", {})],
                          "()").splitlines()[0] == '"@query": ?'
