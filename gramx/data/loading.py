"""Loading tuples: each modality's ``load`` per row, batches with presence masks, bad rows reported.

Loading happens in the dataset (so in DataLoader workers). A row that fails to load is
never dropped silently: with ``on_error="raise"`` the batch raises a :class:`DataError`
naming the manifest line and the file; with ``"skip"`` the row leaves the batch and is
recorded in an :class:`ErrorLog` that reports the count and the first examples.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from gramx.data.manifest import SKIP_HINT, DataError, Manifest, Row
from gramx.errors import GramxError
from gramx.plugins.modality import Modality
from gramx.runtime.randomness import sample_seed, seeded
from gramx.runtime.workers import WorkerTraceback, format_traceback

__all__ = ["ErrorLog", "RowLoader", "ManifestDataset", "Collator", "check_errors", "item_errors", "to_device",
           "cache_key", "problem_text"]


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
    load runs under :func:`gramx.runtime.randomness.seeded` with the row's
    :func:`~gramx.runtime.randomness.sample_seed` for the current ``epoch``.
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

    def __call__(self, index: int, line: int, values: Mapping[str, Any], where: Callable[[str, str], str],
                 about: Row | None = None) -> dict:
        """The item ``{"index", "values": {name: sample}, "error": None | (line, message), "about"}`` of row ``index``.

        ``values`` holds the row's values (paths resolved); ``where(name, problem)`` words
        the message of a value that fails; ``about`` describes the row (its id, label, line
        and the values to show for it, for an index). An item that failed also holds the
        failure's ``"traceback"`` (``None`` for a failure known beforehand), shown with ``--debug``.
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
            return {"index": index, "values": {}, "error": (line, where(name, problem)), "traceback": trace,
                    "about": about}
        return {"index": index, "values": loaded, "error": None, "about": about}


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
        about = Row(row.line, row.id, row.label, {n: v for n, v in values.items() if v is not None})
        return self.loader(index, row.line, values, lambda name, problem: self.manifest.row_error(row, name, problem),
                           about)


class Collator:
    """Collates dataset items per modality, with presence masks.

    A batch is ``{"inputs": {name: batch or None}, "masks": {name: bool[B]}, "index":
    long[B], "about": [Row or None], "errors": [(line, message)], "tracebacks": [str or None]}``; each modality's batch
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
        return {"inputs": inputs, "masks": masks, "index": index, "about": [item.get("about") for item in items],
                **errors}


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
