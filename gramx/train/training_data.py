"""The rows each process trains on: an epoch's order, its micro-batches, the loader, the left-over rows.

An epoch's order depends only on the run's seed and the epoch; each process's micro-batches
are fixed slices of it, planned before the epoch starts. A run resumed mid-epoch starts its
loader at the first micro-batch not yet used, and each row's random augmentation depends
on (seed, epoch, row) only (:mod:`gramx.runtime.randomness`), so it sees exactly what it would have
seen, with any number of DataLoader workers.

- **A manifest** (random access): the order is a seeded permutation of its rows, the one
  ``DistributedSampler`` draws; process ``r`` of ``W`` takes every ``W``-th row from ``r``.
  The rows of each global batch do not depend on the number of processes.
- **Shards** (streamed, :mod:`gramx.data.shard_reader`): the order is the shards in a seeded order,
  each shard's rows shuffled; process ``r`` takes the ``r``-th of ``W`` contiguous, equal
  parts, so it reads only the shards that hold its part (the two at each boundary are read
  by both neighbours, each keeping its own rows). The rows of a global batch depend on the
  number of processes; for a given number the run is as exact as with a manifest.

Rows an epoch does not train on (the remainder of an uneven split, the incomplete last
batch with ``drop_last``, the micro-batches short of a full optimizer step) are "left
over"; the trainer loads them at the epoch's end only to report the bad ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch

from gramx.data.loading import Collator, ManifestDataset, RowLoader
from gramx.data.manifest import DataError, Manifest, read_manifest
from gramx.data.shard_reader import ShardSet, ShardStream, read_shards
from gramx.data.shards import is_shards
from gramx.errors import GramxError
from gramx.evaluate.report import read_classes, zeroshot_targets
from gramx.model.model import GramxModel
from gramx.runtime.distributed import DistContext
from gramx.runtime.workers import WorkerLoader
from gramx.train.config import DataConfig, RunConfig
from gramx.train.feature_cache import FeatureCache, prepare_training_inputs

__all__ = ["TrainingData", "ManifestData", "ShardData", "read_training_rows", "read_run_files", "open_training_data"]

log = logging.getLogger("gramx.train")


class TrainingData:
    """One process's share of the training rows (see the module docstring); use a subclass.

    ``plan(accumulate)`` must run first: it fixes the micro-batches of every epoch.
    """

    def __init__(self, count: int, rank: int, world: int, local_batch: int, data: DataConfig, seed: int,
                 collate: Callable[[list[dict]], dict], pin_memory: bool = False):
        self.count, self.rank, self.world, self.local_batch = count, rank, world, local_batch
        self.data, self.seed, self.collate, self.pin_memory = data, seed, collate, pin_memory
        self.per_rank = count if world == 1 else count // world
        self.micro_per_epoch = 0

    def plan(self, accumulate: int) -> int:
        """Fix the micro-batches of an epoch; returns the optimizer steps per epoch."""
        whole = self.per_rank // self.local_batch
        micro = whole if self.data.drop_last else math.ceil(self.per_rank / self.local_batch)
        steps = micro // accumulate
        if steps == 0:
            raise GramxError(
                f"an epoch has no full optimizer step: {self.count} tuples, batch size {self.data.batch_size}, "
                f"accumulate {accumulate}", hint="lower data.batch_size or optim.accumulate")
        self.micro_per_epoch = steps * accumulate
        return steps

    def complete(self, name: str) -> bool:
        """Whether every row has a value of modality ``name``."""
        raise NotImplementedError

    def order(self, epoch: int) -> np.ndarray:
        """Every row's position, in the reading order of ``epoch``."""
        raise NotImplementedError

    def share(self, order: np.ndarray) -> np.ndarray:
        """This process's rows of an epoch's ``order`` (``per_rank`` of them)."""
        raise NotImplementedError

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This process's micro-batches of ``epoch``."""
        rows = self.share(self.order(epoch))
        b = self.local_batch
        return [rows[k * b:(k + 1) * b] for k in range(self.micro_per_epoch)]

    def left_over(self, epoch: int) -> np.ndarray:
        """The rows of ``epoch`` no process trains on that this process checks."""
        order = self.order(epoch)
        used = min(self.per_rank, self.micro_per_epoch * self.local_batch)
        tail = order[self.per_rank * self.world:]
        return np.concatenate([self.share(order)[used:], tail[self.rank::self.world]])

    def loader(self, epoch: int, skip: int) -> WorkerLoader:
        """A loader of ``epoch``'s micro-batches after the first ``skip``."""
        raise NotImplementedError

    def load(self, epoch: int, rows: np.ndarray) -> list[dict]:
        """Dataset items of ``rows`` (as :meth:`order` numbers them), loaded in this process for ``epoch``."""
        raise NotImplementedError


class ManifestData(TrainingData):
    """Training rows from a manifest, loaded at random by :class:`gramx.data.loading.ManifestDataset`."""

    def __init__(self, dataset: ManifestDataset, **kwargs):
        super().__init__(len(dataset), **kwargs)
        self.dataset = dataset

    def complete(self, name: str) -> bool:
        return all(name in row.values for row in self.dataset.manifest.rows)

    def order(self, epoch: int) -> np.ndarray:
        if not self.data.shuffle:
            return np.arange(self.count)
        return torch.randperm(self.count, generator=torch.Generator().manual_seed(self.seed + epoch)).numpy()

    def share(self, order: np.ndarray) -> np.ndarray:
        return order[:self.per_rank * self.world][self.rank::self.world]

    def loader(self, epoch: int, skip: int) -> WorkerLoader:
        self.dataset.set_epoch(epoch)
        return WorkerLoader(self.dataset, batch_sampler=[b.tolist() for b in self.batches(epoch)[skip:]],
                            num_workers=self.data.workers, collate_fn=self.collate, pin_memory=self.pin_memory,
                            generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))

    def load(self, epoch: int, rows: np.ndarray) -> list[dict]:
        self.dataset.set_epoch(epoch)
        return [self.dataset[int(i)] for i in rows]


class ShardData(TrainingData):
    """Training rows streamed from shards by :class:`gramx.data.shard_reader.ShardStream`."""

    def __init__(self, shards: ShardSet, loader: RowLoader, **kwargs):
        super().__init__(len(shards), **kwargs)
        self.shards, self.row_loader = shards, loader

    def complete(self, name: str) -> bool:
        return self.shards.present.get(name, 0) == len(self.shards)

    def order(self, epoch: int) -> np.ndarray:
        return self.shards.epoch_order(self.seed, epoch, self.data.shuffle)

    def share(self, order: np.ndarray) -> np.ndarray:
        return order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]

    def loader(self, epoch: int, skip: int) -> WorkerLoader:
        self.row_loader.epoch = epoch
        return WorkerLoader(ShardStream(self.shards, self.row_loader, self.batches(epoch)[skip:]), batch_size=None,
                            num_workers=self.data.workers, collate_fn=self.collate, pin_memory=self.pin_memory)

    def load(self, epoch: int, rows: np.ndarray) -> list[dict]:
        if not len(rows):
            return []
        self.row_loader.epoch = epoch
        return next(iter(ShardStream(self.shards, self.row_loader, [rows])))


def read_training_rows(path) -> Manifest | ShardSet:
    """The training rows ``data.train`` names: shards (:func:`gramx.data.shards.is_shards`) or a manifest."""
    return read_shards(path) if is_shards(path) else read_manifest(path)


def read_run_files(config: RunConfig, warn: bool = True) -> Manifest | ShardSet:
    """Read every file a run needs (training rows, validation manifest, class names) now, not hours into it.

    Returns the training rows; ``warn`` logs the columns the run does not use.
    """
    rows = read_training_rows(config.data.train)
    val = read_manifest(config.data.val) if config.data.val is not None else None
    for source in (rows, val):
        if source is None:
            continue
        if not len(source):
            raise DataError(f"{source.path}: no rows to read")
        unused = source.check_columns(config.modalities)
        if unused and warn:
            log.warning("%s: columns not used by this run: %s", source.path.name, ", ".join(unused))
    if config.eval.classes is not None:
        classes = read_classes(config.eval.classes)
        if val is not None and "zeroshot" in config.eval.metrics:
            zeroshot_targets([r.label for r in val.rows], classes)
    return rows


def open_training_data(rows: Manifest | ShardSet, model: GramxModel, config: RunConfig,
                       ctx: DistContext) -> tuple[TrainingData, FeatureCache]:
    """This process's :class:`TrainingData` and the features cached for frozen modalities.

    Frozen modalities are cached and ``preload`` ones preloaded first
    (:func:`gramx.train.feature_cache.prepare_training_inputs`); batches then carry their
    values, and the rows known to fail are reported without loading them again.
    """
    mods = {n: (model.modalities[n], model.modality_configs[n]) for n in model.names}
    cache, preloaded, failed = prepare_training_inputs(model, rows, config, ctx.device)
    loading = dict(passthrough=set(cache.tables) | set(preloaded), failed=failed, seed=config.optim.seed)
    options = dict(rank=ctx.rank, world=ctx.world_size, local_batch=config.data.batch_size // ctx.world_size,
                   data=config.data, seed=config.optim.seed, pin_memory=ctx.device.type == "cuda",
                   collate=Collator(mods, passthrough=cache.tables.keys(), preloaded=preloaded))
    if isinstance(rows, ShardSet):
        return ShardData(rows, RowLoader(mods, **loading), **options), cache
    return ManifestData(ManifestDataset(rows, mods, **loading), **options), cache
