"""``StoreContract``: the behaviour every :class:`sdl_core.Store` keeps.

Subclass it in a test module and supply one async fixture, ``store``, that yields a
fresh, empty store (and closes it afterwards)::

    import pytest_asyncio
    from sdl_core.testing.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest_asyncio.fixture
        async def store(self, tmp_path):
            s = MyStore(tmp_path / "db")
            yield s
            await s.close()

Every test is ``@pytest.mark.asyncio``; hypothesis drives the property tests.
``large_batch_size`` can be lowered by a store whose backend is slow.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdl_core.protocols import JSONObject, Store
from sdl_core.records import record_key

__all__ = ["StoreContract"]


async def collect(store: Store, dataset: str) -> list[JSONObject]:
    return [record async for record in store.iterate(dataset)]


def contact(email: str, name: str = "", org: str = "", role: str = "", **extra: Any) -> JSONObject:
    return {"name": name or None, "email": email, "org": org or None, "role": role or None,
            **extra}


# ---------------------------------------------------------------- strategies

_emails = st.sampled_from(
    ["casey@connector.com", " Casey@Connector.com ", "blake@otherco.com", "TAYLOR@companyx.com",
     "taylor@companyx.com", "jordan@companyy.com", "", "  "]
)
_names = st.sampled_from(["Casey", "Blake", "Taylor BD", "Jordan Ops", "Zoë Ünïcode", ""])
_orgs = st.sampled_from(["Company X", "company x", "OtherCo", ""])
_strengths = st.one_of(st.none(), st.floats(0, 1, allow_nan=False), st.integers(0, 1))

_contact_records = st.builds(
    lambda email, name, org, strength, note: {
        "name": name or None, "email": email, "org": org or None, "role": "Advisor",
        "strength": strength, "note": note,
    },
    _emails, _names, _orgs, _strengths, st.text(max_size=8),
)
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.lists(_contact_records, max_size=12)),
        st.tuples(st.just("replace"), st.lists(_contact_records, max_size=6)),
        st.tuples(st.just("delete"), st.lists(_emails, max_size=3)),
    ),
    min_size=1,
    max_size=8,
)


def _apply_model(model: dict[str, JSONObject], op: str, payload: Sequence[Any]) -> None:
    """The reference semantics: a dict keyed by record_key (last write, first order)."""
    if op == "replace":
        model.clear()
    if op in ("upsert", "replace"):
        for record in payload:
            model[record_key("contacts", record)] = copy.deepcopy(record)
    elif op == "delete":
        for key in payload:
            model.pop(key, None)


class StoreContract:
    """Contract tests for a :class:`sdl_core.Store`; subclasses provide ``store``."""

    large_batch_size = 20_000

    # ------------------------------------------------------------ basics

    @pytest.mark.asyncio
    async def test_implements_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)

    @pytest.mark.asyncio
    async def test_round_trip(self, store: Store) -> None:
        records = [
            contact("casey@connector.com", "Casey Connector", "Connector LLC", "Advisor",
                    strength=0.85),
            contact("blake@otherco.com", "Blake Builder", "OtherCo", "Engineer", strength=0.4),
        ]
        assert await store.upsert("contacts", records) == 2
        assert await collect(store, "contacts") == records
        assert await store.count("contacts") == 2

    @pytest.mark.asyncio
    async def test_values_survive_exactly(self, store: Store) -> None:
        record = {"id": "w-1", "name": "Zoë «quoted» \u2603", "nested": {"a": [1, 2.5, None]},
                  "flag": True, "big": 2**53, "tiny": 1e-300, "empty": ""}
        await store.upsert("writer_activity", [record])
        assert await collect(store, "writer_activity") == [record]

    @pytest.mark.asyncio
    async def test_unknown_dataset_is_empty(self, store: Store) -> None:
        assert await store.count("never-written") == 0
        assert await collect(store, "never-written") == []

    @pytest.mark.asyncio
    async def test_upsert_returns_total_count(self, store: Store) -> None:
        assert await store.upsert("interactions", [{"email": "a@x.com", "strength": 0.1}]) == 1
        assert await store.upsert("interactions", [{"email": "b@x.com", "strength": 0.2}]) == 2
        assert await store.upsert("interactions", [{"email": "A@x.com", "strength": 0.3}]) == 2
        assert await store.upsert("interactions", []) == 2

    # ------------------------------------------------------------ keys, order

    @pytest.mark.asyncio
    async def test_upsert_replaces_by_key_and_keeps_first_insert_order(self, store: Store) -> None:
        await store.upsert("contacts", [contact("a@x.com", "A"), contact("b@x.com", "B"),
                                        contact("c@x.com", "C")])
        await store.upsert("contacts", [contact(" B@X.com ", "B2"), contact("d@x.com", "D")])
        names = [r["name"] for r in await collect(store, "contacts")]
        assert names == ["A", "B2", "C", "D"]
        assert await store.count("contacts") == 4

    @pytest.mark.asyncio
    async def test_duplicates_in_one_batch_last_wins(self, store: Store) -> None:
        count = await store.upsert("interactions", [
            {"email": "x@y.com", "strength": 0.1}, {"email": "z@y.com", "strength": 0.2},
            {"email": "X@Y.COM", "strength": 0.9},
        ])
        assert count == 2
        assert await collect(store, "interactions") == [
            {"email": "X@Y.COM", "strength": 0.9}, {"email": "z@y.com", "strength": 0.2},
        ]

    @pytest.mark.asyncio
    async def test_records_are_replaced_not_merged(self, store: Store) -> None:
        await store.upsert("contacts", [contact("a@x.com", "A", "Org", "Role", strength=0.9)])
        await store.upsert("contacts", [{"email": "a@x.com", "name": "A only"}])
        assert await collect(store, "contacts") == [{"email": "a@x.com", "name": "A only"}]

    @pytest.mark.asyncio
    async def test_contacts_without_email_are_kept_keyed_by_name_org_role(
        self, store: Store
    ) -> None:
        await store.upsert("contacts", [
            contact("", "Pat", "Acme", "CEO"),
            contact("", "Pat", "Acme", "CTO"),
            {"name": "Sam", "org": None, "role": None},
        ])
        assert await store.count("contacts") == 3
        # Same normalised name/org/role (case, spacing) is the same contact.
        await store.upsert("contacts", [contact("  ", " PAT ", "acme", "ceo", strength=0.7)])
        records = await collect(store, "contacts")
        assert len(records) == 3
        assert records[0]["strength"] == 0.7 and records[0]["name"] == " PAT "
        assert [r["role"] for r in records[1:]] == ["CTO", None]

    @pytest.mark.asyncio
    async def test_datasets_are_independent(self, store: Store) -> None:
        await store.upsert("contacts", [contact("a@x.com", "A")])
        await store.upsert("interactions", [{"email": "a@x.com", "strength": 0.4}])
        assert await collect(store, "contacts") == [contact("a@x.com", "A")]
        assert await collect(store, "interactions") == [{"email": "a@x.com", "strength": 0.4}]
        await store.replace("interactions", [])
        assert await store.count("contacts") == 1

    @pytest.mark.asyncio
    async def test_other_datasets_key_by_id(self, store: Store) -> None:
        await store.upsert("writer_activity", [{"id": "1", "v": 1}, {"id": "2", "v": 2}])
        await store.upsert("writer_activity", [{"id": "1", "v": 3}, {"v": 4}, {"v": 4}])
        assert await collect(store, "writer_activity") == [
            {"id": "1", "v": 3}, {"id": "2", "v": 2}, {"v": 4},
        ]

    # ------------------------------------------------------------ replace, delete

    @pytest.mark.asyncio
    async def test_replace_makes_the_whole_dataset(self, store: Store) -> None:
        await store.upsert("contacts", [contact("a@x.com", "A"), contact("b@x.com", "B")])
        assert await store.replace("contacts", [contact("c@x.com", "C"),
                                                contact("b@x.com", "B2")]) == 2
        assert [r["name"] for r in await collect(store, "contacts")] == ["C", "B2"]
        assert await store.replace("contacts", []) == 0
        assert await collect(store, "contacts") == []
        assert await store.count("contacts") == 0

    @pytest.mark.asyncio
    async def test_delete_by_key(self, store: Store) -> None:
        records = [contact("a@x.com", "A"), contact("b@x.com", "B"), contact("", "N", "O", "R")]
        await store.upsert("contacts", records)
        keys = [record_key("contacts", r) for r in records]
        assert await store.delete("contacts", [keys[0], keys[0], "nobody@x.com"]) == 1
        assert await store.delete("contacts", [keys[2]]) == 1
        assert await store.delete("contacts", []) == 0
        assert await collect(store, "contacts") == [records[1]]
        assert await store.count("contacts") == 1

    @pytest.mark.asyncio
    async def test_deleted_key_reinserted_goes_last(self, store: Store) -> None:
        await store.upsert("contacts", [contact("a@x.com", "A"), contact("b@x.com", "B")])
        await store.delete("contacts", ["a@x.com"])
        await store.upsert("contacts", [contact("a@x.com", "A2")])
        assert [r["name"] for r in await collect(store, "contacts")] == ["B", "A2"]

    # ------------------------------------------------------------ marker, safety

    @pytest.mark.asyncio
    async def test_changed_marker_changes_on_every_write(self, store: Store) -> None:
        seen = {await store.changed_marker("contacts")}

        async def changed() -> None:
            marker = await store.changed_marker("contacts")
            assert marker not in seen, "changed_marker did not change after a write"
            seen.add(marker)

        await store.upsert("contacts", [contact("a@x.com", "A")])
        await changed()
        await store.upsert("contacts", [contact("a@x.com", "A2")])  # same count, new content
        await changed()
        await store.replace("contacts", [contact("b@x.com", "B")])
        await changed()
        await store.delete("contacts", ["b@x.com"])
        await changed()
        marker = await store.changed_marker("contacts")
        await store.count("contacts")
        await collect(store, "contacts")
        await store.upsert("interactions", [{"email": "z@x.com", "strength": 1}])
        assert await store.changed_marker("contacts") == marker, "reads or writes of another "\
            "dataset must not change the marker"

    @pytest.mark.asyncio
    async def test_bad_records_refuse_the_whole_call(self, store: Store) -> None:
        await store.upsert("contacts", [contact("a@x.com", "A")])
        with pytest.raises((TypeError, ValueError)):
            await store.upsert("contacts", [contact("b@x.com", "B"), ["not", "an", "object"]])  # type: ignore[list-item]
        with pytest.raises((TypeError, ValueError)):
            await store.upsert("contacts", [{"email": "c@x.com", "bad": float("nan")}])
        assert await collect(store, "contacts") == [contact("a@x.com", "A")]

    @pytest.mark.asyncio
    async def test_store_holds_copies(self, store: Store) -> None:
        record = contact("a@x.com", "A", tags=["x"])
        await store.upsert("contacts", [record])
        record["tags"].append("mutated-after-upsert")
        (stored,) = await collect(store, "contacts")
        stored["name"] = "mutated-after-read"
        assert await collect(store, "contacts") == [contact("a@x.com", "A", tags=["x"])]

    @pytest.mark.asyncio
    async def test_large_batches(self, store: Store) -> None:
        size = self.large_batch_size
        records = [{"email": f"user{i}@example.com", "strength": (i % 100) / 100}
                   for i in range(size)]
        assert await store.upsert("interactions", records) == size
        # Re-ingest the second half with new values plus as many new records.
        update = [{"email": f"USER{i}@example.com", "strength": 1.0}
                  for i in range(size // 2, size + size // 2)]
        assert await store.upsert("interactions", update) == size + size // 2
        got = await collect(store, "interactions")
        assert len(got) == size + size // 2
        assert got[0] == records[0]
        assert got[size // 2] == update[0]
        assert got[-1] == update[-1]
        assert [r["email"].lower() for r in got] == [f"user{i}@example.com"
                                                     for i in range(size + size // 2)]

    # ------------------------------------------------------------ properties

    # The store fixture is shared across examples on purpose (each example resets its
    # dataset first), and every subclass runs this same method on its own store, which
    # is what ``differing_executors`` flags.
    @pytest.mark.asyncio
    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.differing_executors, HealthCheck.too_slow])
    @given(operations=_operations)
    async def test_property_last_write_per_key_in_first_insert_order(
        self, store: Store, operations: list[tuple[str, list[Any]]]
    ) -> None:
        # One store serves every example, so each starts from an empty dataset.
        await store.replace("contacts", [])
        model: dict[str, JSONObject] = {}
        for op, payload in operations:
            if op == "upsert":
                count = await store.upsert("contacts", payload)
            elif op == "replace":
                count = await store.replace("contacts", payload)
            else:
                keys = [record_key("contacts", {"email": e}) for e in payload]
                await store.delete("contacts", keys)
                payload = keys
                count = await store.count("contacts")
            _apply_model(model, op, payload)
            assert count == len(model)
        assert await collect(store, "contacts") == list(model.values())
        assert await store.count("contacts") == len(model)
