"""The relay: HTTP app, built-in backends and the client nodes use to reach it."""

from sdl_core.relay.app import create_relay_app

__all__ = ["create_relay_app"]
