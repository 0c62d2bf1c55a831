"""The public API is ``sdl_core.__all__``, pinned: adding or removing a name is a decision.

Update ``EXPECTED`` on purpose when the API changes (and the CHANGELOG with it).
"""

from __future__ import annotations

import inspect

import sdl_core

EXPECTED = [
    "INTRO_REVEALED",
    "OPERATOR_SESSION",
    "PUBLIC",
    "AgentIdentity",
    "CapabilitySpec",
    "CommandSpec",
    "ConfigError",
    "ConnectorOptions",
    "ConnectorRuntime",
    "ConnectorSpec",
    "DarkmeshError",
    "DarkmeshSettings",
    "EventBus",
    "HTTPProblem",
    "Host",
    "HostHooks",
    "Identity",
    "InboundRequest",
    "IngestClient",
    "IngestError",
    "IntroRevealed",
    "JSONObject",
    "MailboxMessage",
    "NodeRecord",
    "NodeSettings",
    "PluginConflictError",
    "PluginLoadError",
    "PluginSettingsError",
    "PullResult",
    "RelayBackend",
    "RelayBackendSpec",
    "RelayError",
    "RelayHost",
    "RelaySettings",
    "RelayUnavailable",
    "RouteSpec",
    "Signer",
    "SignerSpec",
    "Skill",
    "SkillSpec",
    "StartupError",
    "StateArea",
    "Store",
    "StoreSpec",
    "SubscriberSpec",
    "TransportSpec",
    "UnknownPluginError",
    "VerificationFailed",
    "VerifiedAgent",
    "Verifier",
    "VerifierSpec",
    "Versioned",
    "authorities_from_url",
    "bind",
    "bind_owner",
    "clamp01",
    "connector_options",
    "expand_loopback",
    "hookimpl",
    "is_loopback",
    "long_poll",
    "make_plugin_manager",
    "node_json",
    "normalise_authority",
    "normalise_email",
    "normalise_identifier",
    "parse_strength",
    "prepare_auth",
    "progress_bar",
    "record_key",
    "request_body",
    "request_identity",
]


def test_all_is_pinned_exactly() -> None:
    assert sdl_core.__all__ == EXPECTED


def test_all_is_sorted_and_unique() -> None:
    assert sorted(set(sdl_core.__all__)) == sorted(sdl_core.__all__)
    assert len(set(sdl_core.__all__)) == len(sdl_core.__all__)


def test_every_name_exists_and_is_documented() -> None:
    for name in sdl_core.__all__:
        member = getattr(sdl_core, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert inspect.getdoc(member), f"sdl_core.{name} has no docstring"


def test_no_private_or_module_members_leak() -> None:
    public = {n for n in dir(sdl_core) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(sdl_core, n))}
    # Submodules appear as attributes once imported; everything else must be in __all__.
    assert public - modules - set(sdl_core.__all__) == set()
