"""Darkmesh AAuth: RFC 9421 signed requests with self-issued ``aa-agent+jwt`` keys.

The plugin registers a signer (``httpx.Auth`` per role), an inbound verifier for nodes and
relays, the JWKS route, and the ``keygen`` and ``trust`` commands. Normative profile:
``spec/aauth.md``.
"""

__version__ = "0.1.0"
