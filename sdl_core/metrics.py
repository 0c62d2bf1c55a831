"""Prometheus metrics of one node or relay process (its own registry, no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "MAX_CALLERS", "Metrics"]

#: Distinct callers counted by name before the rest count as ``other``.
MAX_CALLERS = 1000


class Metrics:
    """The counters every process exposes; plugins add theirs to ``registry``."""

    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "darkmesh_http_requests", "HTTP requests served, by route and status",
            ["route", "status"], registry=self.registry,
        )
        self.verification_failures = Counter(
            "darkmesh_verification_failures", "Refused signed requests, by reason code",
            ["reason"], registry=self.registry,
        )
        self.auth_accepted = Counter(
            "darkmesh_auth_accepted", "Accepted requests, by auth scheme",
            ["scheme"], registry=self.registry,
        )
        self.intros = Counter(
            "darkmesh_intros", "Warm-intro events on this node, by stage "
            "(requested, answered, revealed, declined)",
            ["stage", "template"], registry=self.registry,
        )
        self.relay_posts = Counter(
            "darkmesh_relay_posts", "Relay posts published (relay) or handled (node)",
            ["template"], registry=self.registry,
        )
        self.mailbox_messages = Counter(
            "darkmesh_mailbox_messages", "Mailbox messages sent or received",
            ["direction"], registry=self.registry,
        )
        self.store_latency = Histogram(
            "darkmesh_store_latency_seconds", "Store operation latency",
            ["store", "operation"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.role = role
        self.callers: dict[tuple[str, str], int] = {}

    def count_caller(self, scheme: str, caller: str) -> None:
        """Count one accepted request per (scheme, caller), for ``darkmesh status``.

        Shows during a migration from shared keys (``spec/aauth.md`` §5.3) which callers
        still use the key. Bounded: callers past :data:`MAX_CALLERS` count as ``other``.
        """
        key = (scheme, caller)
        if key not in self.callers and len(self.callers) >= MAX_CALLERS:
            key = (scheme, "other")
        self.callers[key] = self.callers.get(key, 0) + 1

    def callers_json(self) -> list[dict[str, object]]:
        return [
            {"scheme": scheme, "caller": caller, "accepted": count}
            for (scheme, caller), count in sorted(self.callers.items())
        ]

    def render(self) -> bytes:
        return generate_latest(self.registry)
