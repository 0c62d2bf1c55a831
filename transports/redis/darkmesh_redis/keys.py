"""Every Redis key the backend uses, in one place.

All keys start with the configured prefix, so several Darkmesh networks (or a test run)
can share one Redis without seeing each other. Some scripts derive per-node and
per-template keys from the prefix inside Lua, so the backend needs a standalone Redis
(or one Cluster slot), not a sharded Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str

    # ---------------------------------------------------------------- posts
    @property
    def meta(self) -> str:
        """Hash ``{epoch, seq}``: one key, so the epoch and the counter vanish together."""
        return f"{self.prefix}meta"

    @property
    def posts(self) -> str:
        """Stream of post metadata; entry id ``<seq>-0``, fields r(equester), t(emplate),
        e(xpires_at). Bodies live apart so that a pull scans small entries only."""
        return f"{self.prefix}posts"

    @property
    def post_bodies(self) -> str:
        """Hash seq -> stored post JSON."""
        return f"{self.prefix}post-bodies"

    @property
    def post_expiry(self) -> str:
        """Sorted set seq by expires_at: purging and counting live posts."""
        return f"{self.prefix}post-expiry"

    def post_dedupe(self, post_id: str) -> str:
        """Seq of a publish already applied, so a retried publish is not stored twice."""
        return f"{self.prefix}post-dedupe:{post_id}"

    @property
    def events(self) -> str:
        """Wake-up stream every relay process watches (``k=p`` post, ``k=m n=<node>``)."""
        return f"{self.prefix}events"

    # ------------------------------------------------------------- registry
    def node(self, node_id: str) -> str:
        """Hash ``{url, capabilities (JSON), last_seen}`` of one node."""
        return f"{self.prefix}node:{node_id}"

    @property
    def node_order(self) -> str:
        """Sorted set node_id by first-registration number (``list_nodes`` order)."""
        return f"{self.prefix}node-order"

    @property
    def node_counter(self) -> str:
        return f"{self.prefix}node-counter"

    @property
    def aliases(self) -> str:
        """Hash alias -> node_id."""
        return f"{self.prefix}aliases"

    def node_aliases(self, node_id: str) -> str:
        """Set of the aliases one node owns."""
        return f"{self.prefix}node-aliases:{node_id}"

    def presence(self, node_id: str) -> str:
        """Set of the templates a node last pulled or registered with (expires)."""
        return f"{self.prefix}presence:{node_id}"

    def live(self, template: str) -> str:
        """Sorted set node_id by last seen, per template (``live_nodes``)."""
        return f"{self.prefix}live:{template}"

    @property
    def live_templates(self) -> str:
        """Set of templates that have a ``live:`` sorted set (for trimming)."""
        return f"{self.prefix}live-templates"

    # ------------------------------------------------------------ mailboxes
    def mailbox(self, node_id: str) -> str:
        """Stream of one node's unacked messages; entry id ``<created ms>-<n>``."""
        return f"{self.prefix}mbox:{node_id}"

    @property
    def mailbox_index(self) -> str:
        """Sorted set node_id by the creation ms of its oldest unacked message."""
        return f"{self.prefix}mbox-index"

    def mailbox_dedupe(self, token: str) -> str:
        return f"{self.prefix}mbox-dedupe:{token}"

    # --------------------------------------------------------------- replay
    def once(self, key: str) -> str:
        return f"{self.prefix}once:{key}"
