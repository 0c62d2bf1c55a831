"""``darkmesh ingest csv``: contacts and interactions from CSV files (``wire-v1.md`` §8).

Column rules, exactly as upstream reads them (``csv.DictReader``; a header row is
required, columns are found by name, extra columns are ignored, a missing column or
a short row reads as null):

* contacts ``name,email,org,role,strength``: ``name``, ``org``, ``role`` verbatim;
  ``email`` trimmed and lower-cased (``""`` when missing — such rows are kept);
  ``strength`` only when the cell is non-empty: the parsed float, or 0.5 when it does
  not parse (non-finite values included, since JSON cannot carry them);
* interactions ``email,strength``: rows with an empty email are skipped; ``email``
  trimmed and lower-cased; ``strength`` the parsed float, 0.5 when empty or unparsable.

Files are read as a stream and sent in batches (5,000 records per POST by default).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from sdl_core.connectors.common import (
    DEFAULT_BATCH_SIZE,
    ConnectorOptions,
    IngestClient,
    IngestError,
    connector_options,
    prepare_auth,
)
from sdl_core.errors import DarkmeshError
from sdl_core.protocols import JSONObject
from sdl_core.records import normalise_email, parse_strength

CONTACT_COLUMNS = ("name", "email", "org", "role", "strength")
INTERACTION_COLUMNS = ("email", "strength")
DRY_RUN_SAMPLE = 5

#: Connector identities (``spec/aauth.md`` §7.4), one per dataset.
CONNECTOR_NAMES = {"contacts": "csv-contacts", "interactions": "csv-interactions"}


class CsvFormatError(DarkmeshError):
    """A CSV file cannot be read by the §8 rules; the message names the file."""


# ------------------------------------------------------------------------- rows


def contact_from_row(row: Mapping[str, str | None]) -> JSONObject:
    """One contacts record from one CSV row."""
    record: JSONObject = {
        "name": row.get("name"),
        "email": normalise_email(row.get("email")),
        "org": row.get("org"),
        "role": row.get("role"),
    }
    cell = row.get("strength")
    if cell is not None and cell != "":
        record["strength"] = parse_strength(cell)
    return record


def interaction_from_row(row: Mapping[str, str | None]) -> JSONObject | None:
    """One interactions record, or None for a row without an email (skipped)."""
    email = normalise_email(row.get("email"))
    if not email:
        return None
    return {"email": email, "strength": parse_strength(row.get("strength"))}


# ------------------------------------------------------------------------ files


@dataclass
class ReadStats:
    """Counts of one file read: data rows seen, records produced, rows skipped."""

    rows: int = 0
    records: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class CsvKind:
    dataset: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    convert: Callable[[Mapping[str, str | None]], JSONObject | None]


CONTACTS = CsvKind("contacts", CONTACT_COLUMNS, (), contact_from_row)
INTERACTIONS = CsvKind("interactions", INTERACTION_COLUMNS, ("email",), interaction_from_row)
KINDS = {"contacts": CONTACTS, "interactions": INTERACTIONS}


def _check_header(path: Path, kind: CsvKind, fieldnames: list[str] | None) -> None:
    expected = ",".join(kind.columns)
    if not fieldnames:
        raise CsvFormatError(f"{path} is empty: a header row ({expected}) is required")
    if not set(fieldnames) & set(kind.columns):
        shown = ",".join(fieldnames)[:120]
        raise CsvFormatError(
            f"{path} has no header row: its first row ({shown}) names none of the "
            f"{kind.dataset} columns {expected}; add the header row"
        )
    missing = [c for c in kind.required if c not in fieldnames]
    if missing:
        raise CsvFormatError(
            f"{path}: the header row has no {', '.join(missing)} column (expected {expected})"
        )


def read_csv(
    path: Path, kind: CsvKind, stats: ReadStats | None = None
) -> Generator[JSONObject, None, None]:
    """Stream the records of one CSV file by the §8 rules of ``kind``.

    :raises CsvFormatError: no header row, undecodable text or malformed CSV, naming
        the file and line.
    """
    stats = stats if stats is not None else ReadStats()
    try:
        # utf-8-sig: spreadsheet exports often start with a BOM, which would otherwise
        # become part of the first column's name.
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            try:
                _check_header(path, kind, list(reader.fieldnames or []))
                for row in reader:
                    stats.rows += 1
                    record = kind.convert(row)
                    if record is None:
                        stats.skipped += 1
                        continue
                    stats.records += 1
                    yield record
            except csv.Error as exc:
                raise CsvFormatError(f"{path} line {reader.line_num}: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise CsvFormatError(
                    f"{path} is not UTF-8 text (near line {reader.line_num + 1}): {exc.reason}"
                ) from exc
    except OSError as exc:
        raise CsvFormatError(f"cannot read {path}: {exc.strerror}") from exc


def check_file(path: Path, kind: CsvKind) -> None:
    """Read only the header of ``path``, so a bad file stops before anything is sent."""
    generator = read_csv(path, kind)
    try:
        next(generator)
    except StopIteration:
        pass
    finally:
        generator.close()


# ---------------------------------------------------------------------- command


def dry_run_summary(files: list[tuple[CsvKind, Path]], options: ConnectorOptions,
                    batch_size: int) -> JSONObject:
    """Read every file completely and describe what would be sent."""
    datasets = []
    for kind, path in files:
        stats = ReadStats()
        sample: list[JSONObject] = []
        for record in read_csv(path, kind, stats):
            if len(sample) < DRY_RUN_SAMPLE:
                sample.append(record)
        datasets.append({
            "dataset": kind.dataset,
            "file": str(path),
            "connector": CONNECTOR_NAMES[kind.dataset],
            "rows": stats.rows,
            "records": stats.records,
            "skipped": stats.skipped,
            "batches": math.ceil(stats.records / batch_size),
            "first_records": sample,
        })
    return {"dry_run": True, "url": options.url, "batch_size": batch_size,
            "datasets": datasets}


async def ingest_files(
    files: list[tuple[CsvKind, Path]],
    options: ConnectorOptions,
    batch_size: int,
    *,
    auth_factory: Callable[..., Any] = prepare_auth,
    transport: Any = None,
) -> JSONObject:
    """Send every file to the node, one dataset after the other."""
    url = options.require_url()
    auths = auth_factory(options, [CONNECTOR_NAMES[kind.dataset] for kind, _ in files])
    results = []
    async with IngestClient(url, timeout=options.timeout, batch_size=batch_size,
                            quiet=options.quiet, transport=transport) as client:
        for kind, path in files:
            name = CONNECTOR_NAMES[kind.dataset]
            stats = ReadStats()
            result = await client.ingest(kind.dataset, read_csv(path, kind, stats), auths[name],
                                         label=f"{kind.dataset} ({path.name})")
            results.append({**result.to_json(), "file": str(path), "connector": name,
                            "auth": auths[name].scheme, "skipped": stats.skipped})
    return {"url": url, "datasets": results}


@click.command("csv")
@click.option("--contacts", "contacts_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Contacts CSV: name,email,org,role,strength (header row required).")
@click.option("--interactions", "interactions_file",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Interactions CSV: email,strength (header row required).")
@click.option("--batch-size", type=click.IntRange(1, 50_000), default=DEFAULT_BATCH_SIZE,
              show_default=True, help="Records per POST /darkmesh/ingest.")
@connector_options
def csv_command(contacts_file: Path | None, interactions_file: Path | None, batch_size: int,
                options: ConnectorOptions) -> None:
    """Ingest contacts and/or interactions CSV files into a node."""
    files: list[tuple[CsvKind, Path]] = []
    if contacts_file is not None:
        files.append((CONTACTS, contacts_file))
    if interactions_file is not None:
        files.append((INTERACTIONS, interactions_file))
    if not files:
        raise click.UsageError("give --contacts FILE, --interactions FILE, or both")
    try:
        for kind, path in files:
            check_file(path, kind)
        if options.dry_run:
            summary = dry_run_summary(files, options, batch_size)
        else:
            summary = asyncio.run(ingest_files(files, options, batch_size))
    except (CsvFormatError, IngestError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
