"""Embedding a collection in batches: rows of a manifest or shard folder in, :class:`Embeddings` out, in bounded memory.

:func:`embedded_batches` reads the rows ``first:stop`` of its source one batch after another
(a manifest line by line, shards entry by entry), loads them in DataLoader workers exactly
as training does (:class:`gramx.data.loading.RowLoader`), embeds them and yields each batch
with the source row that follows it, which is where a resumed run starts. Memory holds
a few batches whatever the size of the collection. A row that fails to load stops the run
naming its line and file (``on_error="raise"``) or is left out and recorded
(``"skip"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from gramx.data.loading import Collator, ErrorLog, ManifestDataset, RowLoader, check_errors, to_device
from gramx.data.manifest import Manifest, iter_rows, manifest_path, count_rows as count_manifest_rows
from gramx.data.shard_reader import ShardSet, ShardStream
from gramx.embed.embedding import Embeddings, evaluating
from gramx.model.model import GramxModel
from gramx.runtime.progress import progress as progress_report
from gramx.runtime.workers import WorkerLoader

__all__ = ["BATCHES_PER_READ", "count_rows", "embedded_batches"]

#: Batches of manifest rows read at a time and handed to the workers together.
BATCHES_PER_READ = 16


def count_rows(source: Path | ShardSet) -> int:
    """The rows of a manifest (one pass over it; none is an error) or of shards (their index)."""
    return len(source) if isinstance(source, ShardSet) else count_manifest_rows(source)


def _manifest_batches(path: Path, first: int, stop: int, batch_size: int) -> Iterator[tuple[Manifest, list]]:
    """The rows ``first:stop`` of a manifest in reads of :data:`BATCHES_PER_READ` batches: ``(rows, batches)``."""
    rows = islice(iter_rows(path), first, stop)
    while read := list(islice(rows, batch_size * BATCHES_PER_READ)):
        yield Manifest(path, read, []), [range(s, min(s + batch_size, len(read))) for s in
                                         range(0, len(read), batch_size)]


def _loaders(source: Path | ShardSet, mods: dict, first: int, stop: int, batch_size: int, workers: int,
             ) -> Iterator[tuple[WorkerLoader, list[int]]]:
    """DataLoaders over the rows ``first:stop``, each with the source row after each of its batches."""
    collate = Collator(mods)
    if isinstance(source, ShardSet):
        batches = [np.arange(s, min(s + batch_size, stop)) for s in range(first, stop, batch_size)]
        stream = ShardStream(source, RowLoader(mods), batches)
        yield WorkerLoader(stream, collate_fn=collate, batch_size=None, num_workers=workers), [
            int(b[-1]) + 1 for b in batches]
        return
    done = first
    for rows, batches in _manifest_batches(source, first, stop, batch_size):
        dataset = ManifestDataset(rows, mods)
        yield WorkerLoader(dataset, collate_fn=collate, batch_sampler=[list(b) for b in batches],
                           num_workers=workers), [done + b.stop for b in batches]
        done += len(rows)


@torch.no_grad()
def embedded_batches(model: GramxModel, source: str | Path | ShardSet, first: int = 0, stop: int | None = None,
                     batch_size: int = 64, workers: int = 0, on_error: str = "raise", error_log: ErrorLog | None = None,
                     modalities: list[str] | None = None, progress: bool = False,
                     ) -> Iterator[tuple[Embeddings, int]]:
    """``(batch, next row)`` for the rows ``first:stop`` of a manifest or shard folder (see the module docstring).

    ``modalities``: the model's modalities to embed (default: all). The values recorded for
    a row are its manifest values, paths resolved (a shard's file as ``shard:entry``).
    """
    if not isinstance(source, ShardSet):
        source = manifest_path(source)
    stop = count_rows(source) if stop is None else stop
    names = [n for n in (modalities or model.names) if n in model.modalities]
    mods = {n: (model.modalities[n], model.modality_configs[n]) for n in names}
    bar = progress_report(total=max(0, stop - first), desc="embed", unit="row", disable=not progress)
    with evaluating(model):
        for loader, ends in _loaders(source, mods, first, stop, batch_size, workers):
            for batch, end in zip(loader, ends):
                check_errors(batch, on_error, error_log)
                inputs = to_device(batch["inputs"], model.device, model.device.type == "cuda")
                masks = {n: m.to(model.device) for n, m in batch["masks"].items()}
                feats = model(inputs, masks)
                about = batch["about"]
                yield Embeddings(
                    ids=[r.id for r in about], labels=[r.label for r in about], lines=[r.line for r in about],
                    feats={n: feats[n].float().cpu() for n in names}, masks=batch["masks"],
                    values={n: [r.values.get(n) for r in about] for n in names},
                ), end
                bar.update(end - bar.n - first)
    bar.close()
