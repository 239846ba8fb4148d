"""Manifest datasets: one tuple per line, per-modality loading, batches with presence masks.

A manifest is JSONL (one object per line) or CSV (a header row); keys are modality names,
values what that modality's ``load`` accepts, plus optional ``id`` and ``label``. A missing
key, ``null`` or an empty CSV cell means the modality is absent for that tuple. For
modalities whose values are paths, relative paths resolve against the manifest's folder.

Loading happens in the dataset (so in DataLoader workers). A row that fails to load is
never dropped silently: with ``on_error="raise"`` the batch raises a :class:`DataError`
naming the manifest line and the file; with ``"skip"`` the row leaves the batch and is
recorded in an :class:`ErrorLog` that reports the count and the first examples.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from gramx.errors import GramxError
from gramx.modality import Modality
from gramx.randomness import sample_seed, seeded
from gramx.workers import WorkerTraceback, format_traceback

__all__ = ["Row", "Manifest", "read_manifest", "DataError", "ErrorLog", "ManifestDataset", "Collator", "check_errors",
           "item_errors", "to_device", "cache_key", "problem_text", "RowLoader", "check_columns"]

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


def _read_csv(path: Path, f: Iterable[str]) -> list[Row]:
    reader = csv.DictReader(f)
    if reader.fieldnames is None:
        raise DataError(f"{path}: empty CSV manifest (it needs a header row)")
    repeated = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
    if repeated:
        raise DataError(f"{path} line 1: the header names the column {repeated[0]!r} twice",
                        hint="give each column of the header its own name")
    rows = []
    for record in reader:
        if None in record:
            raise DataError(f"{path} line {reader.line_num}: more cells than header columns")
        label = record.get("label")
        if isinstance(label, str) and _INT.match(label.strip()):
            record["label"] = int(label)
        rows.append(_row(path, reader.line_num, record))
    return rows


def _read_jsonl(path: Path, f: Iterable[str]) -> list[Row]:
    rows = []
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {line}: invalid JSON ({exc.msg})") from None
        rows.append(_row(path, line, record))
    return rows


def _text(path: Path) -> str:
    """A manifest's text: UTF-8, with or without a byte-order mark; bad bytes are an error naming their line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text", hint="save the manifest as UTF-8") from None


def read_manifest(path: str | Path) -> Manifest:
    """Read a JSONL (``.jsonl``/``.json``/``.ndjson``) or CSV (``.csv``) manifest, UTF-8 (a BOM allowed).

    A manifest without rows is an error.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}", hint="check data.train / data.val or the MANIFEST argument")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json", ".ndjson"):
        raise DataError(f"{path}: unknown manifest format {suffix!r}", hint="use .jsonl or .csv")
    text = io.StringIO(_text(path), newline="")
    rows = _read_csv(path, text) if suffix == ".csv" else _read_jsonl(path, text)
    if not rows:
        raise DataError(f"{path}: the manifest has no rows", hint="a manifest holds one tuple per line")
    columns = sorted({name for r in rows for name in r.values})
    return Manifest(path=path, rows=rows, columns=columns)


@dataclass
class ErrorLog:
    """Rows left out with ``on_error="skip"``: a count and the first examples."""

    keep: int = 5
    count: int = 0
    examples: list[str] = field(default_factory=list)
    seen: set = field(default_factory=set)

    def add(self, errors: Iterable[tuple[int, str]]) -> None:
        for line, message in errors:
            if line in self.seen:  # the same row again in a later epoch
                continue
            self.seen.add(line)
            self.count += 1
            if len(self.examples) < self.keep:
                self.examples.append(message)

    def summary(self, what: str = "rows") -> str:
        if not self.count:
            return f"no {what} skipped"
        more = f" (and {self.count - len(self.examples)} more)" if self.count > len(self.examples) else ""
        return f"skipped {self.count} bad {what}: " + " | ".join(self.examples) + more


def problem_text(value: Any, exc: BaseException) -> str:
    """What went wrong loading ``value``: a gramx error's own message, else the value and the exception."""
    return str(exc) if isinstance(exc, GramxError) else f"{value}: {type(exc).__name__}: {exc}"


class RowLoader:
    """Loads the values of one tuple with each modality's ``load`` into a dataset item.

    ``modalities`` maps name -> ``(Modality, cfg)``. Modalities named in ``passthrough``
    are not loaded: their (path-resolved) value is returned as is, e.g. for cached features
    or preloaded samples. ``failed[name]`` maps :func:`cache_key` of values known to fail
    (found while caching or preloading) to their problem. With a ``seed`` (training), each
    load runs under :func:`gramx.randomness.seeded` with the row's
    :func:`~gramx.randomness.sample_seed` for the current ``epoch``.
    """

    def __init__(
        self,
        modalities: Mapping[str, tuple[Modality, Any]],
        passthrough: Iterable[str] = (),
        failed: Mapping[str, Mapping[Any, str]] | None = None,
        seed: int | None = None,
    ):
        self.modalities = dict(modalities)
        self.passthrough = set(passthrough)
        self.failed = dict(failed or {})
        self.seed = seed
        self.epoch = 0

    def _load(self, index: int, name: str, value: Any) -> Any:
        modality, cfg = self.modalities[name]
        if self.seed is None:
            return modality.load(value, cfg)
        with seeded(sample_seed(self.seed, self.epoch, index, name)):
            return modality.load(value, cfg)

    def __call__(self, index: int, line: int, values: Mapping[str, Any], where: Callable[[str, str], str]) -> dict:
        """The item ``{"index", "values": {name: sample}, "error": None | (line, message)}`` of row ``index``.

        ``values`` holds the row's values (paths resolved); ``where(name, problem)`` words
        the message of a value that fails. An item that failed also holds the failure's
        ``"traceback"`` (``None`` for a failure known beforehand), shown with ``--debug``.
        """
        loaded: dict[str, Any] = {}
        for name in self.modalities:
            value = values.get(name)
            if value is None:
                continue
            problem, trace = self.failed.get(name, {}).get(cache_key(value)), None
            if problem is None and name in self.passthrough:
                loaded[name] = value
                continue
            if problem is None:
                try:
                    loaded[name] = self._load(index, name, value)
                    continue
                except Exception as exc:  # any plugin failure is reported with the line
                    problem, trace = problem_text(value, exc), format_traceback(exc)
            return {"index": index, "values": {}, "error": (line, where(name, problem)), "traceback": trace}
        return {"index": index, "values": loaded, "error": None}


class ManifestDataset(Dataset):
    """Loads one tuple per index (a manifest row) with a :class:`RowLoader`; the arguments are its own."""

    def __init__(
        self,
        manifest: Manifest,
        modalities: Mapping[str, tuple[Modality, Any]],
        passthrough: Iterable[str] = (),
        failed: Mapping[str, Mapping[Any, str]] | None = None,
        seed: int | None = None,
    ):
        self.manifest = manifest
        self.loader = RowLoader(modalities, passthrough, failed, seed)
        self.modalities = self.loader.modalities

    def __len__(self) -> int:
        return len(self.manifest.rows)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose per-sample seeds the loads use."""
        self.loader.epoch = epoch

    def value(self, row: Row, name: str) -> Any:
        """The manifest value of ``name`` in ``row``, with relative paths resolved."""
        value = row.values.get(name)
        return None if value is None else self.modalities[name][0].resolve_value(value, self.manifest.root)

    def __getitem__(self, index: int) -> dict:
        row = self.manifest.rows[index]
        values = {name: self.value(row, name) for name in self.modalities}
        return self.loader(index, row.line, values, lambda name, problem: self.manifest.row_error(row, name, problem))


class Collator:
    """Collates dataset items per modality, with presence masks.

    A batch is ``{"inputs": {name: batch or None}, "masks": {name: bool[B]}, "index":
    long[B], "errors": [(line, message)], "tracebacks": [str or None]}``; each modality's batch
    holds only its present samples (in row order). Items that failed to load leave the batch
    and are listed in ``errors`` (:func:`item_errors`). Modalities in ``passthrough`` are
    collated as plain lists of values; for modalities in ``preloaded`` (``name ->
    {cache_key(value): sample}``) the items hold values whose samples are taken from there.
    """

    def __init__(
        self,
        modalities: Mapping[str, tuple[Modality, Any]],
        passthrough: Iterable[str] = (),
        preloaded: Mapping[str, Mapping[Any, Any]] | None = None,
    ):
        self.modalities = dict(modalities)
        self.passthrough = set(passthrough)
        self.preloaded = dict(preloaded or {})

    def __call__(self, items: list[dict]) -> dict:
        errors = item_errors(items)
        items = [item for item in items if item["error"] is None]
        inputs, masks = {}, {}
        for name, (modality, cfg) in self.modalities.items():
            present = [item["values"][name] for item in items if name in item["values"]]
            masks[name] = torch.tensor([name in item["values"] for item in items], dtype=torch.bool)
            if not present:
                inputs[name] = None
            elif name in self.passthrough:
                inputs[name] = present
            elif name in self.preloaded:
                store = self.preloaded[name]
                inputs[name] = modality.make_batch([store[cache_key(v)] for v in present], cfg)
            else:
                inputs[name] = modality.make_batch(present, cfg)
        index = torch.tensor([item["index"] for item in items], dtype=torch.long)
        return {"inputs": inputs, "masks": masks, "index": index, **errors}


def item_errors(items: Iterable[dict]) -> dict[str, list]:
    """The failures among dataset items: ``{"errors": [(line, message)], "tracebacks": [traceback]}``."""
    failed = [item for item in items if item["error"] is not None]
    return {"errors": [item["error"] for item in failed], "tracebacks": [item.get("traceback") for item in failed]}


def check_errors(batch: dict, on_error: str, log: ErrorLog | None = None) -> None:
    """Raise on a batch's load errors (``on_error="raise"``, the traceback as the cause) or record them in ``log``."""
    if not batch["errors"]:
        return
    if on_error == "raise":
        trace = batch.get("tracebacks", [None])[0]
        raise DataError(batch["errors"][0][1], hint=SKIP_HINT) from (WorkerTraceback(trace) if trace else None)
    if log is not None:
        log.add(batch["errors"])


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move the tensors inside nested dicts / lists / tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device, non_blocking) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device(v, device, non_blocking) for v in obj)
    return obj


def cache_key(value: Any) -> Any:
    """A hashable key for a manifest value (lists and dicts by their JSON text)."""
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True)
