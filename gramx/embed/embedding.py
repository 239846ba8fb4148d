"""Embed with a model: a whole manifest, or a list of raw values.

Each distinct value of a modality (a caption repeated over many rows, a file used twice) is
loaded and encoded once. A row whose value fails to load is an error naming the manifest
line and the file (``on_error="raise"``), or leaves the result and is recorded in an
:class:`gramx.data.loading.ErrorLog` (``"skip"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gramx.data.loading import ErrorLog, ManifestDataset, cache_key, to_device
from gramx.data.manifest import SKIP_HINT, DataError, Manifest, read_manifest
from gramx.plugins.modality import Modality
from gramx.runtime.progress import progress as progress_report
from gramx.data.unique import iter_unique
from gramx.model.model import GramxModel

__all__ = ["Embeddings", "encode_unique", "evaluating", "embed_values", "embed_manifest"]


@dataclass
class Embeddings:
    """Embeddings of a whole manifest: ``feats[name][N, D]`` (zeros where absent), ``masks[name][N]``."""

    ids: list[str]
    labels: list[Any]
    lines: list[int]
    feats: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    values: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def encode_unique(
    values: Iterable,
    modality: Modality,
    cfg: Any,
    encode: Callable[[Any], torch.Tensor],
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[dict, torch.Tensor, dict]:
    """Load and encode each distinct value once: ``(key -> row, table [U, F], key -> problem)``.

    ``encode(batch) -> [n, F]`` runs on the collated batch moved to ``device``. Values that
    fail to load are left out of the table and reported in the third result.
    """
    device = torch.device(device)
    index: dict = {}
    feats: list[torch.Tensor] = []
    failed: dict = {}
    for items in iter_unique(values, modality, cfg, batch_size=batch_size, workers=workers):
        good = [(value, sample) for value, sample, problem in items if problem is None]
        failed.update({cache_key(value): problem for value, _, problem in items if problem is not None})
        if not good:
            continue
        batch = to_device(modality.make_batch([s for _, s in good], cfg), device, device.type == "cuda")
        feats.append(encode(batch))
        for value, _ in good:
            index[cache_key(value)] = len(index)
    table = torch.cat(feats) if feats else torch.zeros(0, device=device)
    return index, table, failed


class evaluating:
    """Context manager: the model in eval mode inside, its previous mode restored after."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


@torch.no_grad()
def embed_values(model: GramxModel, name: str, values: Sequence[Any], batch_size: int = 64,
                 base: str | Path | None = None) -> torch.Tensor:
    """Load, collate and embed raw values (texts, paths) of one modality: ``[N, dim]`` float32 on the CPU.

    Relative paths resolve against ``base`` (default: the working directory) by the
    modality's own rule, as manifest values do against the manifest's folder. Values are
    loaded as a manifest's are (each distinct one once); one that fails is a
    :class:`gramx.data.manifest.DataError` naming it.
    """
    model.check_modality(name)
    modality = model.modalities[name]
    root = Path(base or ".").expanduser().resolve()
    resolved = [modality.resolve_value(v, root) for v in values]
    with evaluating(model):
        index, table, failed = encode_unique(resolved, modality, model.modality_configs[name],
                                             lambda batch: model.embed(name, batch), batch_size=batch_size,
                                             device=model.device)
    if failed:
        raise DataError(next(iter(failed.values())), hint=f"check the {name} value (a file must exist and load)")
    if not resolved:
        return torch.zeros(0, model.dim)
    return table.float().cpu()[[index[cache_key(v)] for v in resolved]]


@torch.no_grad()
def embed_manifest(
    model: GramxModel,
    manifest: str | Path | Manifest,
    batch_size: int = 64,
    workers: int = 0,
    on_error: str = "raise",
    modalities: Iterable[str] | None = None,
    error_log: ErrorLog | None = None,
    progress: bool = False,
) -> Embeddings:
    """Embed every row of a manifest (a path or a :class:`gramx.data.loading.Manifest`).

    ``modalities`` limits the work to some of the model's modalities. Rows that fail to load
    raise a :class:`gramx.data.loading.DataError` (``on_error="raise"``) or are left out and recorded
    in ``error_log`` (``"skip"``).
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    names = [n for n in (modalities or model.names) if n in model.encoders]
    resolver = ManifestDataset(manifest, {n: (model.modalities[n], model.modality_configs[n]) for n in names})
    rows = manifest.rows
    bad: dict[int, str] = {}
    feats, masks = {}, {}
    with evaluating(model):
        for name in progress_report(names, desc="embed", unit="modality", leave=False, disable=not progress):
            values = [resolver.value(r, name) for r in rows]
            index, table, failed = encode_unique(
                [v for v in values if v is not None], model.modalities[name], model.modality_configs[name],
                lambda batch, name=name: model.embed(name, batch), batch_size=batch_size, workers=workers,
                device=model.device,
            )
            keys = [None if v is None else cache_key(v) for v in values]
            for i, key in enumerate(keys):
                if key is not None and key in failed and i not in bad:
                    bad[i] = manifest.row_error(rows[i], name, failed[key])
            if bad and on_error == "raise":
                raise DataError(bad[min(bad)], hint=SKIP_HINT)
            mask = torch.tensor([k is not None and k in index for k in keys], dtype=torch.bool)
            out = torch.zeros(len(rows), model.dim)
            if mask.any():
                idx = torch.tensor([index[k] for k, m in zip(keys, mask.tolist()) if m], dtype=torch.long)
                out[mask] = table.float().cpu()[idx]
            feats[name], masks[name] = out, mask
    if error_log is not None:
        error_log.add((rows[i].line, message) for i, message in sorted(bad.items()))
    keep = torch.tensor([i not in bad for i in range(len(rows))], dtype=torch.bool)
    kept = [r for r, k in zip(rows, keep.tolist()) if k]
    return Embeddings(
        ids=[r.id for r in kept],
        labels=[r.label for r in kept],
        lines=[r.line for r in kept],
        feats={n: f[keep] for n, f in feats.items()},
        masks={n: m[keep] for n, m in masks.items()},
        values={n: [r.values.get(n) for r in kept] for n in names},
    )


