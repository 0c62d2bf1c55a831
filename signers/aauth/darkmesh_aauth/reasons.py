"""Stable reason codes and their ``Signature-Error`` errors (``aauth.md`` §2.3, §2.4)."""

from __future__ import annotations

from collections.abc import Sequence

from darkmesh_aauth.sfv import Token, serialize_dictionary
from sdl_core import VerificationFailed

_ERRORS: dict[str, tuple[str, ...]] = {
    "invalid_request": ("signature_key_missing", "signature_key_malformed", "signature_missing",
                        "signature_malformed", "created_missing"),
    "unsupported_scheme": ("unsupported_scheme",),
    "unsupported_algorithm": ("jwt_alg_invalid", "cnf_jwk_alg_missing", "cnf_jwk_unsupported"),
    "invalid_key": ("cnf_jwk_malformed", "cnf_jwk_not_public", "cnf_jwk_private",
                    "thumbprint_failed"),
    "unknown_key": ("unknown_thumbprint",),
    "invalid_jwt": ("jwt_malformed", "jwt_decode_failed", "jwt_typ_invalid", "jwt_sub_missing",
                    "jwt_iss_missing", "jwt_iat_missing", "jwt_iat_future", "jwt_exp_missing",
                    "jwt_lifetime_excessive", "jwt_jti_missing", "cnf_jwk_missing",
                    "jwt_jkt_mismatch", "jwt_signature_invalid", "sub_mismatch",
                    "iss_mismatch"),
    "expired_jwt": ("jwt_expired",),
    "invalid_input": ("signature_covered_components_incomplete", "query_not_covered",
                      "component_header_missing", "content_digest_missing",
                      "content_digest_malformed", "content_digest_unsupported",
                      "content_digest_mismatch"),
    "invalid_signature": ("signature_invalid", "created_out_of_window", "expired_signature",
                          "keyid_mismatch", "authority_mismatch", "replayed"),
}

#: reason code -> Signature-Error ``error``; every reason code the verifier can give.
SIGNATURE_ERROR: dict[str, str] = {
    reason: error for error, reasons in _ERRORS.items() for reason in reasons
}
REASON_CODES: tuple[str, ...] = tuple(SIGNATURE_ERROR)

ACCEPTED_ALGORITHMS = "Ed25519, ES256"


def failure(reason: str, *, required_input: Sequence[str] = ()) -> VerificationFailed:
    """The :class:`sdl_core.VerificationFailed` for ``reason``, with the extra headers its
    error calls for (components needed, accepted scheme, accepted algorithms)."""
    error = SIGNATURE_ERROR[reason]
    headers: dict[str, str] = {}
    if error == "invalid_input" and required_input:
        headers["Signature-Error"] = serialize_dictionary({
            "error": (Token("invalid_input"), {}),
            "required_input": ([(name, {}) for name in required_input], {}),
        })
    elif error == "unsupported_scheme":
        headers["Accept-Signature-Scheme"] = "jwt"
    elif error == "unsupported_algorithm":
        headers["Accept-Signature-Alg"] = ACCEPTED_ALGORITHMS
    return VerificationFailed(reason, error=error, headers=headers)
