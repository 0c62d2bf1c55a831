"""Factories the plugin's records name: ``factory(runtime, settings)`` (node or relay)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from darkmesh_aauth.registry import TrustRegistry
from darkmesh_aauth.settings import AAuthSettings
from darkmesh_aauth.signer import AAuthSigner
from darkmesh_aauth.verifier import AAuthVerifier
from sdl_core import StartupError, is_loopback, normalise_authority

log = logging.getLogger("darkmesh.aauth")

LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")


def with_key_dir(runtime: Any, settings: AAuthSettings) -> AAuthSettings:
    """``key_dir`` defaults to ``keys/`` beside the settings file the runtime read
    (``aauth.md`` §7.1), as ``darkmesh keygen`` resolves it: with ``--config F`` that is
    ``F``'s directory, whatever the working directory."""
    config = getattr(runtime, "config_file", None)
    if settings.key_dir is None and config is not None:
        return settings.model_copy(update={"key_dir": Path(config).parent / "keys"})
    return settings


def make_signer(runtime: Any, settings: AAuthSettings) -> AAuthSigner:
    """The signer of a node (or of any process with a ``node_id``)."""
    node_id = getattr(runtime.settings, "node_id", None) if runtime.role == "node" else None
    return AAuthSigner(with_key_dir(runtime, settings), node_id=node_id)


def registry_path(runtime: Any, settings: AAuthSettings) -> tuple[Any, str]:
    """The registry file this process verifies against, and the variable that named it."""
    if runtime.role == "relay" and settings.relay_trusted_agents_file is not None:
        return settings.relay_trusted_agents_file, "DARKMESH_RELAY_TRUSTED_AGENTS_FILE"
    return settings.trusted_agents_file, "DARKMESH_TRUSTED_AGENTS_FILE"


def make_verifier(runtime: Any, settings: AAuthSettings) -> AAuthVerifier:
    """The verifier of a node or relay, validated per ``aauth.md`` §5.2."""
    role = runtime.role
    process = runtime.settings
    url = process.public_url if role == "relay" else process.listen_url
    scheme = urlsplit(url).scheme or "http"
    configured = settings.relay_authorities if role == "relay" else settings.authorities
    variable = "DARKMESH_RELAY_AAUTH_AUTHORITIES" if role == "relay" else \
        "DARKMESH_AAUTH_AUTHORITIES"
    try:
        authorities = [normalise_authority(a, scheme) for a in configured]
    except ValueError as exc:
        raise StartupError(f"darkmesh-aauth: {variable}: {exc}") from None
    path, path_variable = registry_path(runtime, settings)
    registry = TrustRegistry(path, known_capabilities=runtime.capability_names())
    mode = process.auth_mode
    shared_key = (process.key if role == "relay" else process.node_key).get_secret_value()
    prefix = "relay " if role == "relay" else ""
    if path is None:
        if mode == "aauth":
            raise StartupError(f"darkmesh-aauth: {prefix}auth mode aauth needs a trust registry: "
                               f"set {path_variable} (add entries with `darkmesh trust add`)")
        if not shared_key:
            key_var = "DARKMESH_RELAY_KEY" if role == "relay" else "DARKMESH_NODE_KEY"
            raise StartupError(f"darkmesh-aauth: {prefix}auth mode either needs a shared key "
                               f"({key_var}) or a trust registry ({path_variable})")
        log.info("darkmesh-aauth: no trust registry configured (%s); signed requests get 503",
                 path_variable)
    elif registry.status()["last_error"] is not None:
        raise StartupError(f"darkmesh-aauth: {path_variable}: {registry.status()['last_error']}")
    elif mode == "aauth" and len(registry) == 0:
        raise StartupError(f"darkmesh-aauth: {prefix}auth mode aauth needs at least one entry "
                           f"in {path} ({path_variable}); add one with `darkmesh trust add`")
    if mode == "aauth" and not authorities:
        bind = str(getattr(process, "host", "127.0.0.1"))
        url_authority = normalise_authority(urlsplit(url).netloc, scheme)
        if bind not in LOOPBACK_BINDS and is_loopback(url_authority):
            url_var = "DARKMESH_RELAY_PUBLIC_URL" if role == "relay" else "DARKMESH_LISTEN_URL"
            raise StartupError(
                f"darkmesh-aauth: {prefix}bound to {bind} but its URL is {url}: set {variable} "
                f"(or {url_var}) to the authority callers sign for"
            )
    return AAuthVerifier(
        registry, window=settings.signature_window_sec, authorities=authorities, scheme=scheme,
        accept_upstream_tokens=settings.accept_upstream_tokens,
        max_replay_entries=settings.replay_cache_max_entries,
    )
