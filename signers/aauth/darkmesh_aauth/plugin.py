"""Hook implementations of ``darkmesh-aauth`` (records only; objects live elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator

from darkmesh_aauth.settings import AAuthSettings
from sdl_core import CommandSpec, SignerSpec, VerifierSpec, hookimpl


def _signer_factory(runtime: object, settings: object) -> object:
    from darkmesh_aauth.runtime import make_signer

    return make_signer(runtime, settings)  # type: ignore[arg-type]


def _verifier_factory(runtime: object, settings: object) -> object:
    from darkmesh_aauth.runtime import make_verifier

    return make_verifier(runtime, settings)  # type: ignore[arg-type]


@hookimpl
def darkmesh_register_signers() -> Iterator[SignerSpec]:
    yield SignerSpec(name="aauth", factory=_signer_factory, settings=AAuthSettings,
                     description="RFC 9421 signatures with a self-issued aa-agent+jwt key")


@hookimpl
def darkmesh_register_verifiers() -> Iterator[VerifierSpec]:
    yield VerifierSpec(name="aauth", scheme="aauth", factory=_verifier_factory,
                       settings=AAuthSettings,
                       description="AAuth verifier with a hot-reloaded trust registry")


@hookimpl
def darkmesh_register_commands() -> Iterator[CommandSpec]:
    from darkmesh_aauth.cli import keygen, trust

    yield CommandSpec(name="keygen", command=keygen,
                      description="create an Ed25519 or ES256 key pair for a node, connector "
                      "or the operator")
    yield CommandSpec(name="trust", command=trust,
                      description="manage the trust registry: add, list, remove")
