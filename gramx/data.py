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
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from gramx.errors import GramxError, LoadError
from gramx.modality import Modality

__all__ = [
    "Row",
    "Manifest",
    "read_manifest",
    "DataError",
    "ErrorLog",
    "ManifestDataset",
    "Collator",
    "check_errors",
    "to_device",
    "cache_key",
    "encode_unique",
    "load_unique",
]

RESERVED = ("id", "label")
_INT = re.compile(r"^-?\d+$")


class DataError(GramxError):
    """A manifest row could not be read or loaded; names the manifest line and the file."""


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


def _row(path: Path, line: int, record: Any) -> Row:
    if not isinstance(record, dict):
        raise DataError(f"{path} line {line}: expected an object, got {type(record).__name__}")
    values = {k: v for k, v in record.items() if k not in RESERVED and v is not None and v != ""}
    rid = record.get("id")
    return Row(line=line, id=str(rid) if rid not in (None, "") else f"{path.stem}:{line}",
               label=record.get("label") if record.get("label") != "" else None, values=values)


def read_manifest(path: str | Path) -> Manifest:
    """Read a JSONL (``.jsonl``/``.json``/``.ndjson``) or CSV (``.csv``) manifest."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}", hint="check data.train / data.val or the MANIFEST argument")
    suffix = path.suffix.lower()
    rows: list[Row] = []
    columns: set[str] = set()
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise DataError(f"{path}: empty CSV manifest (it needs a header row)")
            for record in reader:
                if None in record:
                    raise DataError(f"{path} line {reader.line_num}: more cells than header columns")
                label = record.get("label")
                if isinstance(label, str) and _INT.match(label.strip()):
                    record["label"] = int(label)
                rows.append(_row(path, reader.line_num, record))
        elif suffix in (".jsonl", ".json", ".ndjson"):
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {line}: invalid JSON ({exc.msg})") from None
                rows.append(_row(path, line, record))
        else:
            raise DataError(f"{path}: unknown manifest format {suffix!r}", hint="use .jsonl or .csv")
    for r in rows:
        columns.update(r.values)
    return Manifest(path=path, rows=rows, columns=sorted(columns))


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


class ManifestDataset(Dataset):
    """Loads one tuple per index with each modality's ``load``.

    ``modalities`` maps name -> ``(Modality, cfg)``. Modalities named in ``passthrough``
    are not loaded: their (path-resolved) value is returned as is, e.g. for cached features.
    An item is ``{"index", "values": {name: sample}, "error": None | (line, message)}``.
    """

    def __init__(
        self,
        manifest: Manifest,
        modalities: Mapping[str, tuple[Modality, Any]],
        passthrough: Iterable[str] = (),
    ):
        self.manifest = manifest
        self.modalities = dict(modalities)
        self.passthrough = set(passthrough)

    def __len__(self) -> int:
        return len(self.manifest.rows)

    def value(self, row: Row, name: str) -> Any:
        """The manifest value of ``name`` in ``row``, with relative paths resolved."""
        value = row.values.get(name)
        modality = self.modalities[name][0]
        if value is not None and modality.value_is_path and isinstance(value, str):
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() else self.manifest.root / p)
        return value

    def __getitem__(self, index: int) -> dict:
        row = self.manifest.rows[index]
        values: dict[str, Any] = {}
        for name, (modality, cfg) in self.modalities.items():
            value = self.value(row, name)
            if value is None:
                continue
            if name in self.passthrough:
                values[name] = value
                continue
            try:
                values[name] = modality.load(value, cfg)
            except Exception as exc:  # any plugin failure is reported with the line
                problem = str(exc) if isinstance(exc, LoadError) else f"{value}: {type(exc).__name__}: {exc}"
                message = f"{self.manifest.path.name} line {row.line} ({name}): {problem}"
                return {"index": index, "values": {}, "error": (row.line, message)}
        return {"index": index, "values": values, "error": None}


class Collator:
    """Collates dataset items per modality, with presence masks.

    A batch is ``{"inputs": {name: batch or None}, "masks": {name: bool[B]}, "index":
    long[B], "errors": [(line, message)]}``; each modality's batch holds only its present
    samples (in row order). Items that failed to load leave the batch and are listed in
    ``errors``. Modalities in ``passthrough`` are collated as plain lists of values; for
    modalities in ``preloaded`` (``name -> {cache_key(value): sample}``) the items hold values
    whose samples are taken from there.
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
        errors = [item["error"] for item in items if item["error"] is not None]
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
        return {"inputs": inputs, "masks": masks, "index": index, "errors": errors}


def check_errors(batch: dict, on_error: str, log: ErrorLog | None = None) -> None:
    """Raise on a batch's load errors (``on_error="raise"``) or record them in ``log``."""
    if not batch["errors"]:
        return
    if on_error == "raise":
        line, message = batch["errors"][0]
        raise DataError(message, hint="fix or remove the row, or set data.on_error=skip to leave bad rows out")
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


def _as_list(items: list) -> list:
    return items


class _ValueDataset(Dataset):
    """Loads distinct values of one modality; a failure is returned, not raised."""

    def __init__(self, values: list, modality: Modality, cfg: Any):
        self.values, self.modality, self.cfg = values, modality, cfg

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int):
        try:
            return i, self.modality.load(self.values[i], self.cfg), None
        except Exception as exc:  # reported per row by the caller
            problem = str(exc) if isinstance(exc, GramxError) else f"{self.values[i]}: {type(exc).__name__}: {exc}"
            return i, None, problem


@torch.no_grad()
def encode_unique(
    values: list,
    modality: Modality,
    cfg: Any,
    encode,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[dict, torch.Tensor, dict]:
    """Load and encode each distinct value once: ``(key -> row, table [U, F], key -> problem)``.

    ``encode(batch) -> [n, F]`` runs on the collated batch moved to ``device``. Values that
    fail to load are left out of the table and reported in the third result.
    """
    from torch.utils.data import DataLoader

    device = torch.device(device)
    unique = list({cache_key(v): v for v in values}.values())
    loader = DataLoader(
        _ValueDataset(unique, modality, cfg), batch_size=batch_size, num_workers=workers,
        collate_fn=_as_list, generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda",
    )
    index: dict = {}
    feats: list[torch.Tensor] = []
    failed: dict = {}
    for items in loader:
        good = [(i, s) for i, s, err in items if err is None]
        failed.update({cache_key(unique[i]): err for i, _, err in items if err is not None})
        if not good:
            continue
        batch = to_device(modality.make_batch([s for _, s in good], cfg), device, device.type == "cuda")
        feats.append(encode(batch))
        for i, _ in good:
            index[cache_key(unique[i])] = len(index)
    table = torch.cat(feats) if feats else torch.zeros(0, device=device)
    return index, table, failed


def load_unique(values: list, modality: Modality, cfg: Any, workers: int = 0) -> tuple[dict, dict]:
    """Load each distinct value once: ``(key -> sample, key -> problem)`` (see :func:`cache_key`)."""
    from torch.utils.data import DataLoader

    unique = list({cache_key(v): v for v in values}.values())
    loader = DataLoader(_ValueDataset(unique, modality, cfg), batch_size=16, num_workers=workers,
                        collate_fn=_as_list, generator=torch.Generator().manual_seed(0))
    samples: dict = {}
    failed: dict = {}
    for items in loader:
        for i, sample, err in items:
            if err is None:
                samples[cache_key(unique[i])] = sample
            else:
                failed[cache_key(unique[i])] = err
    return samples, failed
