"""How the operator's own tools (dashboard, MCP server) authenticate to the node's API.

They act as ``darkmesh-operator@<node_id>`` (DESIGN.md §11 *Identity*) and reach skills
only through their documented routes. The credential, in the CLI's order: the operator
shared key (``node_key``) unless the node is in ``aauth`` mode (which ignores shared
keys), else a signature by the signer's ``operator`` role unless it is in ``hmac`` mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from sdl_core.errors import StartupError

if TYPE_CHECKING:
    from sdl_core.protocols import Signer

OPERATOR_ROLE = "operator"


@dataclass(frozen=True, kw_only=True)
class OperatorCredential:
    """Headers and/or an ``httpx.Auth`` to attach to every call of one client."""

    headers: dict[str, str] = field(default_factory=dict)
    auth: httpx.Auth | None = None
    scheme: str = "shared-key"


def operator_credential(
    *, base_url: str, auth_mode: str, node_key: str, signer: Signer | None
) -> OperatorCredential:
    """The operator's credential for calls to ``base_url``.

    :raises StartupError: naming the settings to configure when there is none.
    """
    if auth_mode != "aauth" and node_key:
        return OperatorCredential(headers={"X-Darkmesh-Key": node_key})
    if auth_mode != "hmac" and signer is not None and signer.has_role(OPERATOR_ROLE):
        authority = httpx.URL(base_url).netloc.decode("ascii")
        return OperatorCredential(auth=signer.auth(OPERATOR_ROLE, authority=authority),
                                  scheme="aauth")
    if auth_mode == "aauth":
        raise StartupError(
            "no operator credential: auth mode aauth needs the operator key of darkmesh-aauth "
            "(`darkmesh keygen --operator`, then DARKMESH_AAUTH_OPERATOR_PRIVATE_JWK_PATH)"
        )
    raise StartupError(
        "no operator credential: set DARKMESH_NODE_KEY ([node] node_key, or --node-key), or "
        "install darkmesh-aauth and configure the operator key (`darkmesh keygen --operator`)"
    )


class OperatorCallError(Exception):
    """A node answered an operator call with an HTTP error; ``detail`` is its reason."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def operator_answer(response: httpx.Response) -> Any:
    """The decoded JSON of a node's answer to an operator call.

    A body that is not JSON stands as ``{"detail": <its first 300 characters>}``.

    :raises OperatorCallError: for a 4xx or 5xx answer, with the node's ``detail``.
    """
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text[:300]}
    if response.status_code >= 400:
        raise OperatorCallError(response.status_code,
                                data.get("detail") if isinstance(data, dict) else data)
    return data


__all__ = [
    "OPERATOR_ROLE",
    "OperatorCallError",
    "OperatorCredential",
    "operator_answer",
    "operator_credential",
]
