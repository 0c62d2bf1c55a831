"""darkmesh-redis: a relay backend on Redis, so several relay processes share one state.

The entry point is :mod:`darkmesh_redis.plugin`; the backend is
:class:`darkmesh_redis.backend.RedisRelayBackend`, configured by
:class:`darkmesh_redis.settings.RedisSettings`.
"""

__version__ = "0.1.0"
