"""DataLoader workers: an exception raised in one reaches the caller as itself, its traceback kept for ``--debug``.

PyTorch re-raises a worker's exception in the main process as a new exception of the same
type whose message is the worker's whole formatted traceback ("Caught DataError in
DataLoader worker process 0. Original Traceback ..."), and drops its other attributes (a
:class:`~gramx.errors.GramxError`'s hint). A :class:`WorkerLoader`'s workers send the
exception back as a batch instead (:class:`WorkerFailure`), and the main process raises it
with the worker's traceback as its cause (:class:`WorkerTraceback`, as
``concurrent.futures`` does for its processes): the message stays the user's one line and
``--debug`` still shows where it came from.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader, Dataset, IterableDataset

from gramx.errors import GramxError

__all__ = ["WorkerTraceback", "WorkerFailure", "WorkerLoader", "format_traceback"]


class WorkerTraceback(Exception):
    """The formatted traceback of an exception raised elsewhere (a worker): the cause of the one raised here."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def format_traceback(exc: BaseException) -> str:
    """``exc`` with its traceback, as Python prints it."""
    return "".join(traceback.format_exception(exc))


def _portable(exc: Exception) -> Exception:
    """``exc`` when it survives pickling as itself, else an exception of a built-in type with its message (and hint)."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception class that cannot be rebuilt from its arguments
        copy = None
    if type(copy) is type(exc) and str(copy) == str(exc):
        return exc
    if isinstance(exc, GramxError):
        return GramxError(str(exc), hint=exc.hint)
    return RuntimeError(f"{type(exc).__name__}: {exc}")


@dataclass
class WorkerFailure:
    """An exception raised in a worker, sent to the main process in place of a batch."""

    error: Exception
    trace: str

    @classmethod
    def of(cls, exc: Exception) -> WorkerFailure:
        return cls(_portable(exc), format_traceback(exc))

    def reraise(self):
        raise self.error from WorkerTraceback(self.trace)


def _failure(items: Any) -> WorkerFailure | None:
    if isinstance(items, WorkerFailure):
        return items
    return next((item for item in items if isinstance(item, WorkerFailure)), None) if isinstance(items, list) else None


class _Collate:
    """A collate function that returns a :class:`WorkerFailure` instead of raising, and passes one on."""

    def __init__(self, collate: Callable[[Any], Any]):
        self.collate = collate

    def __call__(self, items: Any) -> Any:
        failed = _failure(items)
        if failed is not None:
            return failed
        try:
            return self.collate(items)
        except Exception as exc:
            return WorkerFailure.of(exc)


class _Items(Dataset):
    """A map-style dataset whose items are a :class:`WorkerFailure` where reading them raises."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:
            return WorkerFailure.of(exc)


class _Stream(IterableDataset):
    """An iterable dataset that ends with a :class:`WorkerFailure` where iterating it raises."""

    def __init__(self, dataset: IterableDataset):
        self.dataset = dataset

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.dataset
        except Exception as exc:
            yield WorkerFailure.of(exc)


class WorkerLoader(DataLoader):
    """A ``DataLoader`` whose workers' exceptions are raised by the caller's loop as themselves.

    An exception keeps its type and attributes when it can be pickled (else it arrives as a
    :class:`GramxError` or ``RuntimeError`` with its message); its cause is a
    :class:`WorkerTraceback`. Without workers (``num_workers=0``) it is a plain ``DataLoader``.
    """

    def __init__(self, dataset: Dataset, collate_fn: Callable[[Any], Any], num_workers: int = 0, **options):
        if num_workers:
            dataset = _Stream(dataset) if isinstance(dataset, IterableDataset) else _Items(dataset)
            collate_fn = _Collate(collate_fn)
        super().__init__(dataset, collate_fn=collate_fn, num_workers=num_workers, **options)

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if isinstance(batch, WorkerFailure):
                batch.reraise()
            yield batch
