"""Record checks and encoding shared by the vault and the memory store.

Both stores accept the same inputs and refuse the same ones, so a test that passes
on the memory store means the same thing on the vault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sdl_core.records import record_key


class RecordError(ValueError):
    """A record a store cannot hold (not a JSON object, or not JSON-encodable)."""


def check_dataset(dataset: str) -> str:
    if not isinstance(dataset, str) or not dataset:
        raise RecordError(f"dataset must be a non-empty string, got {dataset!r}")
    return dataset


def encode_record(dataset: str, record: Any, index: int) -> tuple[str, bytes]:
    """``(record key, canonical JSON bytes)`` of one record, or :class:`RecordError`."""
    if not isinstance(record, Mapping):
        raise RecordError(
            f"{dataset} record #{index} is a {type(record).__name__}, not a JSON object"
        )
    plain = dict(record)
    try:
        encoded = json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{dataset} record #{index} is not JSON-encodable: {exc}") from exc
    return record_key(dataset, plain), encoded.encode("utf-8")


def encode_records(dataset: str, records: Sequence[Any]) -> list[tuple[str, bytes]]:
    """Encode every record first, so a bad one refuses the whole call before any write."""
    check_dataset(dataset)
    if isinstance(records, (str, bytes, Mapping)):
        raise RecordError(f"{dataset} records must be a list of objects")
    return [encode_record(dataset, record, i) for i, record in enumerate(records)]


def decode_record(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise RecordError("stored record is not a JSON object")
    return value
