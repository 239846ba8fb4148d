"""Loading each distinct value of a modality once, in DataLoader workers (the feature cache, ``preload``).

A caption repeated over many rows or a file named twice is loaded once; a value that fails
is reported by its :func:`gramx.data.loading.cache_key`, for the caller to name the manifest lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from gramx.data.loading import cache_key, problem_text
from gramx.plugins.modality import Modality
from gramx.runtime.workers import WorkerLoader

__all__ = ["iter_unique", "load_unique"]


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
            return self.values[i], self.modality.load(self.values[i], self.cfg), None
        except Exception as exc:  # reported per row by the caller
            return self.values[i], None, problem_text(self.values[i], exc)


def iter_unique(values: Iterable, modality: Modality, cfg: Any, batch_size: int = 16, workers: int = 0,
                ) -> Iterator[list[tuple[Any, Any, str | None]]]:
    """Load each distinct value once (in DataLoader workers), in batches of ``(value, sample, problem)``.

    ``sample`` is ``None`` and ``problem`` says why when a value fails to load.
    """
    unique = list({cache_key(v): v for v in values}.values())
    yield from WorkerLoader(_ValueDataset(unique, modality, cfg), batch_size=batch_size, num_workers=workers,
                            collate_fn=_as_list, generator=torch.Generator().manual_seed(0))


def load_unique(values: Iterable, modality: Modality, cfg: Any, workers: int = 0) -> tuple[dict, dict]:
    """Load each distinct value once: ``(key -> sample, key -> problem)`` (see :func:`cache_key`)."""
    samples: dict = {}
    failed: dict = {}
    for items in iter_unique(values, modality, cfg, workers=workers):
        for value, sample, problem in items:
            if problem is None:
                samples[cache_key(value)] = sample
            else:
                failed[cache_key(value)] = problem
    return samples, failed
