"""What a run computes before its first step: frozen modalities' features, once per distinct value; preloaded samples.

A modality whose encoder has no trainable parameters gives the same features for a value in
every epoch, so they are computed once per distinct value (:class:`FeatureCache`) and the
training batches carry the values, not samples. A ``preload`` modality's samples are loaded
once and kept. :func:`prepare_training_inputs` does both for a run's training rows: a
manifest (every value), or shards, which are streamed and not read ahead (``preload`` is an
error there, and only frozen modalities whose values are not files, such as captions, are
cached, from the values the shards store apart; the encoders of frozen file modalities run
on every batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from gramx.data.loading import cache_key
from gramx.data.manifest import SKIP_HINT, DataError
from gramx.data.manifest import Manifest
from gramx.data.shard_reader import ShardSet
from gramx.data.unique import load_unique
from gramx.embed.embedding import encode_unique
from gramx.errors import ConfigError
from gramx.model.model import GramxModel
from gramx.train.config import RunConfig

__all__ = ["FeatureCache", "prepare_training_inputs"]


class FeatureCache:
    """Encoder features of frozen modalities during training, computed once per distinct manifest value."""

    def __init__(self):
        self.index: dict[str, dict[Any, int]] = {}
        self.tables: dict[str, torch.Tensor] = {}
        self.failed: dict[str, dict[Any, str]] = {}

    @torch.no_grad()
    def build(self, model: GramxModel, name: str, values: list, batch_size: int, workers: int,
              device: torch.device) -> None:
        """Encode the distinct ``values`` of modality ``name`` with its (frozen) encoder."""
        modality, cfg = model.modalities[name], model.modality_configs[name]
        model.encoders[name].eval()
        self.index[name], self.tables[name], self.failed[name] = encode_unique(
            values, modality, cfg, lambda batch: model.encode(name, batch).float(),
            batch_size=batch_size, workers=workers, device=device,
        )

    def lookup(self, inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Cached features for the modalities whose batch ``inputs`` holds raw values."""
        out = {}
        for name, table in self.tables.items():
            values = inputs.get(name)
            if values is None:
                continue
            idx = torch.tensor([self.index[name][cache_key(v)] for v in values], dtype=torch.long,
                               device=table.device)
            out[name] = table.index_select(0, idx)
        return out


def _values(rows: Manifest | ShardSet, model: GramxModel, name: str) -> list:
    """The values of ``name`` the training rows hold, paths resolved; for shards, those stored apart (not files)."""
    modality = model.modalities[name]
    if isinstance(rows, ShardSet):
        return rows.values(name)
    return [modality.resolve_value(r.values[name], rows.root) for r in rows.rows if r.values.get(name) is not None]


def _first_failure(rows: Manifest | ShardSet, model: GramxModel, name: str, failed: Mapping[Any, str]) -> DataError:
    key, problem = next(iter(failed.items()))
    if isinstance(rows, ShardSet):
        return DataError(f"{rows.path} ({name}): {problem}", hint=SKIP_HINT)
    row = next(r for r in rows.rows if r.values.get(name) is not None
               and cache_key(model.modalities[name].resolve_value(r.values[name], rows.root)) == key)
    return DataError(rows.row_error(row, name, problem), hint=SKIP_HINT)


def prepare_training_inputs(model: GramxModel, rows: Manifest | ShardSet, config: RunConfig, device: torch.device,
                            ) -> tuple[FeatureCache, dict[str, dict], dict[str, dict]]:
    """Cache the features of frozen modalities and preload the samples of ``preload`` ones.

    Returns ``(cache, preloaded, failed)``: ``preloaded[name]`` maps :func:`gramx.data.loading.cache_key`
    of a value to its sample, ``failed[name]`` to the problem of a value that failed. With
    ``data.on_error: raise`` the first failure is raised, naming its manifest line.
    """
    cache, preloaded, failed = FeatureCache(), {}, {}
    streamed = isinstance(rows, ShardSet)
    for name in model.names:
        entry = config.modalities.get(name)
        if entry is None:  # a modality of an extended model that this run does not train against
            continue
        if entry.preload and streamed:
            raise ConfigError(f"modalities.{name}.preload: shards are streamed, not read ahead",
                              hint="set preload: false, or train from the manifest")
        if entry.cache and model.frozen(name) and not (streamed and model.modalities[name].value_is_path):
            cache.build(model, name, _values(rows, model, name), config.eval.batch_size, config.data.workers, device)
            failed[name] = cache.failed[name]
        elif entry.preload:
            preloaded[name], failed[name] = load_unique(_values(rows, model, name), model.modalities[name],
                                                        model.modality_configs[name], workers=config.data.workers)
        if config.data.on_error == "raise" and failed.get(name):
            raise _first_failure(rows, model, name, failed[name])
    return cache, preloaded, failed
