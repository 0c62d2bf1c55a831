"""Darkmesh core: the public API plugins import from. Nothing else is public."""

from sdl_core.auth import bind
from sdl_core.auth import bind_owner
from sdl_core.auth import node_json
from sdl_core.auth import request_body
from sdl_core.auth import request_identity
from sdl_core.errors import ConfigError
from sdl_core.errors import DarkmeshError
from sdl_core.errors import HTTPProblem
from sdl_core.errors import PluginConflictError
from sdl_core.errors import PluginLoadError
from sdl_core.errors import PluginSettingsError
from sdl_core.errors import RelayUnavailable
from sdl_core.errors import StartupError
from sdl_core.errors import UnknownPluginError
from sdl_core.errors import VerificationFailed
from sdl_core.events import INTRO_REVEALED
from sdl_core.events import EventBus
from sdl_core.events import IntroRevealed
from sdl_core.host import Host
from sdl_core.host import RelayHost
from sdl_core.plugins import HostHooks
from sdl_core.plugins import hookimpl
from sdl_core.plugins import make_plugin_manager
from sdl_core.protocols import AgentIdentity
from sdl_core.protocols import Identity
from sdl_core.protocols import InboundRequest
from sdl_core.protocols import JSONObject
from sdl_core.protocols import MailboxMessage
from sdl_core.protocols import NodeRecord
from sdl_core.protocols import PullResult
from sdl_core.protocols import RelayBackend
from sdl_core.protocols import Signer
from sdl_core.protocols import Skill
from sdl_core.protocols import Store
from sdl_core.protocols import VerifiedAgent
from sdl_core.protocols import Verifier
from sdl_core.records import clamp01
from sdl_core.relay.client import RelayError
from sdl_core.records import normalise_email
from sdl_core.records import normalise_identifier
from sdl_core.records import parse_strength
from sdl_core.records import record_key
from sdl_core.settings import DarkmeshSettings
from sdl_core.settings import NodeSettings
from sdl_core.settings import RelaySettings
from sdl_core.specs import OPERATOR_SESSION
from sdl_core.specs import PUBLIC
from sdl_core.specs import CapabilitySpec
from sdl_core.specs import CommandSpec
from sdl_core.specs import ConnectorSpec
from sdl_core.specs import RelayBackendSpec
from sdl_core.specs import RouteSpec
from sdl_core.specs import SignerSpec
from sdl_core.specs import SkillSpec
from sdl_core.specs import StoreSpec
from sdl_core.specs import SubscriberSpec
from sdl_core.specs import TransportSpec
from sdl_core.specs import VerifierSpec
from sdl_core.state import StateArea

__version__ = "0.1.0"

__all__ = [
    "INTRO_REVEALED",
    "OPERATOR_SESSION",
    "PUBLIC",
    "AgentIdentity",
    "CapabilitySpec",
    "CommandSpec",
    "ConfigError",
    "ConnectorSpec",
    "DarkmeshError",
    "DarkmeshSettings",
    "EventBus",
    "HTTPProblem",
    "Host",
    "HostHooks",
    "Identity",
    "InboundRequest",
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
    "bind",
    "bind_owner",
    "clamp01",
    "hookimpl",
    "make_plugin_manager",
    "node_json",
    "normalise_email",
    "normalise_identifier",
    "parse_strength",
    "record_key",
    "request_body",
    "request_identity",
]
