from __future__ import annotations

from typing import Any

from darkmesh_writer_tier.settings import WriterTierSettings
from darkmesh_writer_tier.tiers import TierCounts, count_activity, observation_id, tier_for
from hypothesis import given
from hypothesis import strategies as st

SETTINGS = WriterTierSettings()


def _posts(n: int, *, writer: str = "ana@example.com", topic: str = "ai-content",
           days: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": f"obs-{i}", "writer": writer, "topic": topic, "kind": "post",
         "observed_at": f"2026-10-{(i % days) + 1:02d}T10:00:00Z", "body": f"secret body {i}"}
        for i in range(n)
    ]


def test_expert_needs_posts_and_active_days() -> None:
    counts = count_activity(_posts(25, days=12), "ana@example.com", "ai-content")
    assert counts.posts == 25 and counts.active_days == 12
    assert tier_for(counts, SETTINGS) == "expert"
    few_days = count_activity(_posts(25, days=3), "ana@example.com", "ai-content")
    assert tier_for(few_days, SETTINGS) == "established"


def test_matching_is_normalised_and_scoped_to_topic() -> None:
    records = _posts(4) + _posts(9, topic="cooking")
    counts = count_activity(records, "  ANA@Example.com ", "AI-Content")
    assert counts.observations == 4
    assert tier_for(counts, SETTINGS) == "active"


def test_unknown_and_emerging() -> None:
    assert tier_for(count_activity([], "x", "y"), SETTINGS) == "unknown"
    comment = [{"id": "c1", "writer": "x", "topic": "y", "kind": "comment"}]
    counts = count_activity(comment, "x", "y")
    assert counts.comments == 1 and counts.posts == 0
    assert tier_for(counts, SETTINGS) == "emerging"


def test_observation_ids_are_the_records_used() -> None:
    records = [*_posts(3), {"neotoma_entity_id": "ent_abc", "writer": "ana@example.com",
                            "topic": "ai-content", "kind": "post"}]
    counts = count_activity(records, "ana@example.com", "ai-content")
    assert counts.observation_ids == sorted(["obs-0", "obs-1", "obs-2", "ent_abc"])
    no_id = {"writer": "w", "topic": "t", "body": "b"}
    assert observation_id(no_id).startswith("sha256:")


def test_unparsable_timestamps_count_no_active_day() -> None:
    records: list[dict[str, Any]] = [
        {"id": "a", "writer": "w", "topic": "t", "observed_at": "yesterday"},
        {"id": "b", "writer": "w", "topic": "t", "observed_at": 1_764_000_000_000}]
    counts = count_activity(records, "w", "t")
    assert counts.active_days == 1


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=60))
def test_tier_is_monotonic_in_posts(a: int, b: int) -> None:
    order = ["unknown", "emerging", "active", "established", "expert"]
    low, high = sorted((a, b))
    t_low = tier_for(TierCounts(observations=low, posts=low, active_days=30), SETTINGS)
    t_high = tier_for(TierCounts(observations=high, posts=high, active_days=30), SETTINGS)
    assert order.index(t_low) <= order.index(t_high)


def test_thresholds_must_be_ordered() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="active_posts <= established_posts"):
        WriterTierSettings(active_posts=10, established_posts=5)
