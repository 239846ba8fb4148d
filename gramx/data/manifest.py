"""Manifests: one tuple per line (JSONL or CSV), read into rows of modality values, ids and labels.

A manifest is JSONL (one object per line) or CSV (a header row), UTF-8 with or without a
byte-order mark; keys are modality names, values what that modality's ``load`` accepts,
plus optional ``id`` and ``label``. A missing key, ``null`` or an empty CSV cell means the
modality is absent for that tuple. For modalities whose values are paths, relative paths
resolve against the manifest's folder. A manifest without rows, bytes that are not UTF-8
or a label that is not a string or a number are errors naming the file and line.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gramx.errors import GramxError

__all__ = ["DataError", "SKIP_HINT", "Row", "Manifest", "manifest_path", "iter_rows", "read_manifest", "check_columns"]


RESERVED = ("id", "label")

#: What to do about a bad row, for error hints.
SKIP_HINT = "fix or remove the row, or leave bad rows out (data.on_error=skip, or --on-error skip)"

_INT = re.compile(r"^-?\d+$")


class DataError(GramxError):
    """A manifest row could not be read or loaded; names the manifest line and the file."""


def check_columns(path: Path, columns: list[str], names: Iterable[str]) -> list[str]:
    """Raise a :class:`DataError` when one of the modalities ``names`` has no value in any row.

    ``columns`` are the keys the rows of the data at ``path`` have values for. Returns the
    columns that are not among ``names`` (each with a did-you-mean when it is close to one),
    for a warning.
    """
    names = list(names)
    unused = [c for c in columns if c not in names]
    for name in names:
        if name not in columns:
            close = difflib.get_close_matches(name, unused, n=1)
            hint = (f"the manifest has a column {close[0]!r}: did you mean {name!r}?" if close else
                    f"its columns are {', '.join(columns) or 'none'}; every modality of the run needs values")
            raise DataError(f"{path}: no row has a value for the modality {name!r}", hint=hint)
    return [c + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(c, names, n=1))
            for c in unused]


@dataclass
class Row:
    """One tuple of a manifest: its 1-based line number, id, label and modality values."""

    line: int
    id: str
    label: Any
    values: dict[str, Any]


@dataclass
class Manifest:
    """The rows of a manifest file and the folder its relative paths resolve against."""

    path: Path
    rows: list[Row]
    columns: list[str]

    @property
    def root(self) -> Path:
        return self.path.parent

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_labels(self) -> bool:
        return bool(self.rows) and all(r.label is not None for r in self.rows)

    def check_columns(self, names: Iterable[str]) -> list[str]:
        """See :func:`check_columns`."""
        return check_columns(self.path, self.columns, names)

    def row_error(self, row: Row, name: str, problem: str) -> str:
        """The message for a row whose ``name`` value failed: ``"train.jsonl line 6 (audio): ..."``."""
        return f"{self.path.name} line {row.line} ({name}): {problem}"


def _row(path: Path, line: int, record: Any) -> Row:
    if not isinstance(record, dict):
        raise DataError(f"{path} line {line}: expected an object, got {type(record).__name__}")
    label = record.get("label")
    if isinstance(label, list | dict):
        raise DataError(f"{path} line {line}: the label is a {'list' if isinstance(label, list) else 'JSON object'}",
                        hint="a label is one string or number; rows with the same label count as matches")
    values = {k: v for k, v in record.items() if k not in RESERVED and v is not None and v != ""}
    rid = record.get("id")
    return Row(line=line, id=str(rid) if rid not in (None, "") else f"{path.stem}:{line}",
               label=label if label != "" else None, values=values)


def _csv_rows(path: Path, lines: Iterable[str]) -> Iterator[Row]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None:
        raise DataError(f"{path}: empty CSV manifest (it needs a header row)")
    repeated = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
    if repeated:
        raise DataError(f"{path} line 1: the header names the column {repeated[0]!r} twice",
                        hint="give each column of the header its own name")
    for record in reader:
        if None in record:
            raise DataError(f"{path} line {reader.line_num}: more cells than header columns")
        label = record.get("label")
        if isinstance(label, str) and _INT.match(label.strip()):
            record["label"] = int(label)
        yield _row(path, reader.line_num, record)


def _jsonl_rows(path: Path, lines: Iterable[str]) -> Iterator[Row]:
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {line}: invalid JSON ({exc.msg})") from None
        yield _row(path, line, record)


def _lines(path: Path) -> Iterator[str]:
    """A manifest's lines, read as they are used: UTF-8 (the first may start with a BOM); bad bytes name their line."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path} line {number}: not UTF-8 text", hint="save the manifest as UTF-8") from None


def manifest_path(path: str | Path) -> Path:
    """``path`` resolved, checked to be a manifest file of a known format (JSONL or CSV)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}", hint="check data.train / data.val or the MANIFEST argument")
    if path.suffix.lower() not in (".csv", ".jsonl", ".json", ".ndjson"):
        raise DataError(f"{path}: unknown manifest format {path.suffix.lower()!r}", hint="use .jsonl or .csv")
    return path


def iter_rows(path: str | Path) -> Iterator[Row]:
    """The rows of a manifest, read one line at a time (a corpus of any size in bounded memory)."""
    path = manifest_path(path)
    lines = _lines(path)
    yield from _csv_rows(path, lines) if path.suffix.lower() == ".csv" else _jsonl_rows(path, lines)


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path}: the manifest has no rows", hint="a manifest holds one tuple per line")


def count_rows(path: str | Path) -> int:
    """The rows of a manifest, counted in one pass without keeping them; none is an error."""
    path = manifest_path(path)
    count = sum(1 for _ in iter_rows(path))
    if not count:
        raise _no_rows(path)
    return count


def read_manifest(path: str | Path) -> Manifest:
    """Read a JSONL (``.jsonl``/``.json``/``.ndjson``) or CSV (``.csv``) manifest, UTF-8 (a BOM allowed).

    A manifest without rows is an error.
    """
    path = manifest_path(path)
    rows = list(iter_rows(path))
    if not rows:
        raise _no_rows(path)
    columns = sorted({name for r in rows for name in r.values})
    return Manifest(path=path, rows=rows, columns=columns)
