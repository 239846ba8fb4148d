"""Contrastive losses over a batch of n-modality tuples.

Each loss is a small ``nn.Module`` called as ``loss(feats, masks=None, local=None)`` with
``feats = {modality: [B, D]}`` (L2-normalised) and optional presence ``masks = {modality:
[B] bool}``. Parts are injectable in the style of pytorch-metric-learning: the distance (a
:class:`gramx.losses.distances.TupleDistance` or a similarity), the reducer of per-sample losses and
the temperature module.

- :class:`GramLoss`: GRAM's volume contrastive loss, anchor vs the tuple of the others
  (cosine-regularised with :class:`gramx.losses.distances.RegularisedVolume`).
- :class:`TriangleLoss`: TRIANGLE's area contrastive loss, for exactly three modalities.
- :class:`SymileLoss`: Symile's multilinear-inner-product loss, every modality anchoring in turn.
- :class:`PairwiseInfoNCE`: the CLIP / ImageBind baseline, anchored or over all pairs.
- :class:`DataAnchorMatching`: GRAM's matching head with volume-mined hard negatives.

``local`` (``[B]`` bool, the rows this process owns) computes open_clip's *local loss*: only
those rows' terms, against every row of the (gathered) batch, scaled so that the processes'
losses sum to the global one; the logits per process grow linearly, not quadratically, with
the number of processes (the default mean reducer is assumed). A loss raises
:class:`NothingToContrast` when no sample of the whole batch can take part (and only then).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gramx.losses.distances import AreaDistance, TupleDistance, VolumeDistance, present
from gramx.errors import GramxError
from gramx.scores.similarity import multilinear_product

__all__ = [
    "NothingToContrast",
    "Temperature",
    "GramLoss",
    "TriangleLoss",
    "SymileLoss",
    "PairwiseInfoNCE",
    "DataAnchorMatching",
    "symmetric_cross_entropy",
    "anchor_volumes",
]

Feats = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None
Reducer = Callable[[torch.Tensor], torch.Tensor]


class NothingToContrast(GramxError, ValueError):
    """No sample of the batch can take part in a loss (e.g. none has the anchor and another modality)."""


class Temperature(nn.Module):
    """A softmax temperature stored as ``log(t)`` and clamped to ``[minimum, maximum]``.

    ``learnable=False`` keeps it fixed. Calling the module returns the temperature.
    """

    def __init__(self, init: float = 0.07, minimum: float = 0.01, maximum: float = 1.0, learnable: bool = True):
        super().__init__()
        if not minimum <= init <= maximum:
            raise ValueError(f"temperature {init} is outside [{minimum}, {maximum}]")
        log_t = torch.tensor(math.log(init))
        if learnable:
            self.log_t = nn.Parameter(log_t)
        else:
            self.register_buffer("log_t", log_t)
        self.bounds = (math.log(minimum), math.log(maximum))

    def forward(self) -> torch.Tensor:
        return self.log_t.clamp(*self.bounds).exp()

    def extra_repr(self) -> str:
        return f"value={self().item():.4g}, bounds=({math.exp(self.bounds[0]):.4g}, {math.exp(self.bounds[1]):.4g})"


def _temperature(value: float | Temperature) -> Temperature:
    return value if isinstance(value, Temperature) else Temperature(value)


def symmetric_cross_entropy(logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample loss ``(CE(row i -> i) + CE(column i -> i)) / 2`` for square ``logits``."""
    target = torch.arange(logits.shape[0], device=logits.device)
    rows = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    cols = F.cross_entropy(logits.T, target, reduction="none", label_smoothing=label_smoothing)
    return (rows + cols) / 2


def _mine(rows: torch.Tensor, local: torch.Tensor | None) -> torch.Tensor | None:
    """Positions within ``rows`` of the samples this process owns (``None``: not a local loss)."""
    return None if local is None else local.to(rows.device)[rows].nonzero().squeeze(1)


def _share(per_sample: torch.Tensor, reducer: Reducer, mine: torch.Tensor | None, n: int) -> torch.Tensor:
    """The reduced loss, or this process's share of it: its samples' part, weighted by their count."""
    return reducer(per_sample) if mine is None else reducer(per_sample) * (mine.numel() / n)


def _none_here(feats: Feats) -> torch.Tensor:
    """This process's share when it owns none of the samples: zero, still connected to every feature."""
    return sum(f.sum() for f in feats.values()) * 0.0


def _symmetric_loss(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rows: torch.Tensor,
                    local: torch.Tensor | None, smoothing: float, reducer: Reducer, feats: Feats,
                    ) -> torch.Tensor | None:
    """The symmetric cross-entropy over the samples ``rows`` (``None`` when there are none), or this process's share.

    ``score(query_rows, candidate_rows)`` gives logits; the row direction scores a sample's
    anchor against every tuple, the column direction its tuple against every anchor. With
    ``local`` only this process's samples are queries, against every candidate.
    """
    if rows.numel() == 0:
        return None
    mine = _mine(rows, local)
    if mine is None:
        return reducer(symmetric_cross_entropy(score(rows, rows), smoothing))
    if mine.numel() == 0:
        return _none_here(feats)
    forward, backward = score(rows[mine], rows), score(rows, rows[mine]).T
    per = (F.cross_entropy(forward, mine, reduction="none", label_smoothing=smoothing)
           + F.cross_entropy(backward, mine, reduction="none", label_smoothing=smoothing)) / 2
    return _share(per, reducer, mine, rows.numel())


def anchor_volumes(feats: Feats, masks: Masks, anchor: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Volumes of ``(anchor_i, others_j)`` for the samples that can take part: ``(volumes [n, n], rows [n])``.

    A sample takes part when its anchor and at least one other modality are present;
    missing other modalities are left out of its tuple.
    """
    return VolumeDistance().matrix(feats, masks, anchor)


class GramLoss(nn.Module):
    """GRAM volume contrastive loss.

    ``logits[i, j] = -distance(anchor_i, others_j) / temperature`` with the Gram volume as
    distance by default; the loss is the mean of the cross-entropy over rows (anchor ->
    tuple) and over columns (tuple -> anchor), target ``i``. ``anchor="all"`` averages the
    loss over every modality as anchor.
    """

    def __init__(
        self,
        anchor: str = "text",
        temperature: float | Temperature = 0.07,
        label_smoothing: float = 0.1,
        reducer: Reducer = torch.mean,
        distance: TupleDistance | None = None,
    ):
        super().__init__()
        self.anchor = anchor
        self.temperature = _temperature(temperature)
        self.label_smoothing = label_smoothing
        self.reducer = reducer
        self.distance = distance or VolumeDistance()

    def anchors(self, feats: Feats) -> list[str]:
        """The modalities used as anchor for this batch."""
        if self.anchor == "all":
            return sorted(feats)
        if self.anchor not in feats:
            raise KeyError(f"loss needs modality {self.anchor!r}, the batch has {sorted(feats)}")
        return [self.anchor]

    def forward(self, feats: Feats, masks: Masks = None, local: torch.Tensor | None = None) -> torch.Tensor:
        t = self.temperature()
        losses = []
        for anchor in self.anchors(feats):
            loss = _symmetric_loss(lambda a, b: -self.distance(feats, masks, anchor, a, b) / t,
                                   self.distance.rows(feats, masks, anchor), local, self.label_smoothing,
                                   self.reducer, feats)
            if loss is not None:
                losses.append(loss)
        if not losses:
            raise NothingToContrast("no sample in the batch has an anchor and another modality")
        return torch.stack(losses).mean()


class TriangleLoss(GramLoss):
    """TRIANGLE (Cicchetti et al., NeurIPS 2025): GRAM's loss with the triangle area as distance.

    ``logits[i, j] = -area(anchor_i, others_j) / temperature`` over the samples with all three
    modalities present; the area is TRIANGLE's ``2 area^2`` by default (``squared=False``: the
    area itself). Unlike the volume, the area sees a vector's sign.
    """

    def __init__(self, anchor: str = "text", temperature: float | Temperature = 0.07, label_smoothing: float = 0.1,
                 reducer: Reducer = torch.mean, squared: bool = True):
        super().__init__(anchor, temperature, label_smoothing, reducer, AreaDistance(squared))


def _row_combinations(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise products of the rows of ``vectors`` (each ``[n, d]``) in every combination of row shifts.

    Block ``b`` of the result is one combination; block 0 pairs row i with row i everywhere.
    The order is the ``symile`` package's (``compute_non_anchor_products``, which needs two
    or more vectors; one vector gives its own rows).
    """
    first, rest = vectors[0], vectors[1:]
    shifts = range(first.shape[0])
    if not rest:  # one modality: its rows are all the combinations there are
        return [first]
    if len(rest) == 1:  # the last two: the second shifted against the first
        return [first * rest[0].roll(shift, dims=0) for shift in shifts]
    inner = _row_combinations(rest)
    return [product * first.roll(shift, dims=0) for shift in shifts for product in inner]


class SymileLoss(nn.Module):
    """Symile (Saporta et al., NeurIPS 2024): the multilinear inner product (MIP) of all modalities.

    Each modality anchors in turn: ``logits[i, j] = MIP(anchor_i, negative tuple j) / t`` with
    the positive ``MIP(anchor_i, others_i)`` on the diagonal, cross-entropy over rows; the loss
    averages the anchors. ``negatives="n"``: the negative tuples combine other rows of each
    non-anchor modality, each shuffled by its own random permutation (``B - 1`` negatives per
    row); ``"n_squared"``: every combination of rows (``B^m - 1``). Equals the ``symile``
    package's ``Symile`` on full batches with the same permutations; in addition, a missing
    vector drops out of its tuple's product (masks), only samples with the anchor and another
    modality take part, and the permutations come from ``generator`` (default: torch's).
    """

    def __init__(self, temperature: float | Temperature = 0.07, negatives: str = "n", reducer: Reducer = torch.mean,
                 generator: torch.Generator | None = None):
        super().__init__()
        if negatives not in ("n", "n_squared"):
            raise ValueError(f"negatives must be 'n' or 'n_squared', got {negatives!r}")
        self.temperature = _temperature(temperature)
        self.negatives = negatives
        self.reducer = reducer
        self.generator = generator

    def _logits(self, anchor: torch.Tensor, others: list[torch.Tensor], positions: torch.Tensor,
                shuffles: list[torch.Tensor]) -> torch.Tensor:
        """Logits of the query anchors ``[q, d]``, whose own tuples are rows ``positions`` of ``others``."""
        if self.negatives == "n_squared":
            return anchor @ torch.cat(_row_combinations(others)).T  # [q, n^m], positives in the first block
        shuffled = torch.ones_like(others[0])
        for other, perm in zip(others, shuffles):
            shuffled = shuffled * other[perm.to(other.device)]
        positive = multilinear_product(torch.stack([anchor, *(o[positions] for o in others)], dim=1))
        n = others[0].shape[0]
        own = torch.zeros(anchor.shape[0], n, dtype=torch.bool, device=anchor.device)
        own[torch.arange(anchor.shape[0], device=anchor.device), positions] = True
        return torch.where(own, positive[:, None], anchor @ shuffled.T)

    def forward(self, feats: Feats, masks: Masks = None, local: torch.Tensor | None = None) -> torch.Tensor:
        t = self.temperature()
        names = [n for n in sorted(feats) if bool(present(feats, masks, n).any())]  # absent ones drop out
        losses = []
        for anchor in names:
            others = [n for n in names if n != anchor]
            there = torch.stack([present(feats, masks, n) for n in others], dim=1)
            rows = (present(feats, masks, anchor) & there.any(dim=1)).nonzero().squeeze(1)
            if rows.numel() == 0 or not others:
                continue
            # every process draws the same shuffles, whichever rows it owns
            shuffles = [] if self.negatives == "n_squared" else [
                torch.randperm(rows.numel(), generator=self.generator) for _ in others]
            mine = _mine(rows, local)
            if mine is not None and mine.numel() == 0:
                losses.append(_none_here(feats))
                continue
            dtype = torch.promote_types(feats[anchor].dtype, torch.float32)
            ones = torch.ones((), dtype=dtype, device=rows.device)
            vectors = [torch.where(there[rows, i, None], feats[o][rows].to(dtype), ones) for i, o in enumerate(others)]
            queries = torch.arange(rows.numel(), device=rows.device) if mine is None else mine
            logits = self._logits(feats[anchor][rows[queries]].to(dtype), vectors, queries, shuffles) / t
            per = F.cross_entropy(logits, queries, reduction="none")
            losses.append(_share(per, self.reducer, mine, rows.numel()))
        if not losses:
            raise NothingToContrast("no sample in the batch has an anchor and another modality")
        return torch.stack(losses).mean()


class PairwiseInfoNCE(nn.Module):
    """Pairwise contrastive baseline (CLIP / ImageBind).

    ``anchor="text"``: each other modality against the anchor; ``anchor=None``: every pair
    of modalities. Each pair uses the rows where both are present, with the symmetric
    cross-entropy of ``similarity / temperature``; the loss averages the pairs.
    """

    def __init__(
        self,
        anchor: str | None = "text",
        temperature: float | Temperature = 0.07,
        label_smoothing: float = 0.0,
        reducer: Reducer = torch.mean,
        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.anchor = anchor
        self.temperature = _temperature(temperature)
        self.label_smoothing = label_smoothing
        self.reducer = reducer
        if distance is None:
            from pytorch_metric_learning.distances import CosineSimilarity  # scipy: slow import

            distance = CosineSimilarity()
        self.distance = distance

    def pairs(self, feats: Feats) -> list[tuple[str, str]]:
        """The modality pairs this loss compares for a batch with ``feats``'s modalities."""
        names = sorted(feats)
        if self.anchor is None:
            return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        if self.anchor not in feats:
            raise KeyError(f"loss needs modality {self.anchor!r}, the batch has {sorted(feats)}")
        return [(self.anchor, b) for b in names if b != self.anchor]

    def forward(self, feats: Feats, masks: Masks = None, local: torch.Tensor | None = None) -> torch.Tensor:
        t = self.temperature()
        losses = []
        for a, b in self.pairs(feats):
            rows = (present(feats, masks, a) & present(feats, masks, b)).nonzero().squeeze(1)
            loss = _symmetric_loss(lambda q, c: self.distance(feats[a][q].float(), feats[b][c].float()) / t, rows,
                                   local, self.label_smoothing, self.reducer, feats)
            if loss is not None:
                losses.append(loss)
        if not losses:
            raise NothingToContrast("no sample in the batch has both modalities of any pair")
        return torch.stack(losses).mean()


class DataAnchorMatching(nn.Module):
    """GRAM's data-anchor matching (DAM): does this tuple belong together?

    A small MLP scores the concatenation of a tuple's embeddings (modalities in sorted
    order, zeros for missing ones, plus the presence flags). Each anchor is paired with
    its own tuple (positive) and with one other tuple sampled with probability
    ``softmax(-volume / temperature)`` (a hard negative); each tuple is likewise paired
    with a hard-negative anchor. The loss is the binary cross-entropy of the scores. With
    ``local``, the negatives are drawn for the whole batch (as without it) and only this
    process's pairs are scored.
    """

    def __init__(self, modalities: list[str], dim: int, anchor: str = "text", hidden: int = 256,
                 temperature: float = 0.07):
        super().__init__()
        if anchor not in modalities:
            raise ValueError(f"DAM anchor {anchor!r} is not among the modalities {modalities}")
        self.modalities = sorted(modalities)
        self.anchor = anchor
        self.temperature = temperature
        k = len(self.modalities)
        self.head = nn.Sequential(nn.Linear(k * dim + k, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def score(self, feats: Feats, masks: Masks, anchor_rows: torch.Tensor, tuple_rows: torch.Tensor) -> torch.Tensor:
        """Matching logits for pairs (anchor of row ``anchor_rows[p]``, others of ``tuple_rows[p]``)."""
        parts, flags = [], []
        for name in self.modalities:
            rows = anchor_rows if name == self.anchor else tuple_rows
            there = present(feats, masks, name)[rows]
            parts.append(feats[name][rows].float() * there.unsqueeze(1))
            flags.append(there.float())
        return self.head(torch.cat(parts + [torch.stack(flags, dim=1)], dim=1)).squeeze(1)

    def forward(self, feats: Feats, masks: Masks = None, local: torch.Tensor | None = None) -> torch.Tensor:
        missing = [n for n in self.modalities if n not in feats]
        if missing:
            raise KeyError(f"loss needs modalities {missing}, the batch has {sorted(feats)}")
        with torch.no_grad():
            volumes, rows = anchor_volumes(feats, masks, self.anchor)
        n = rows.numel()
        if n < 2:
            raise NothingToContrast("DAM needs at least two samples with an anchor and another modality")
        logits = (-volumes / self.temperature).nan_to_num(0.0)  # NaN features: the loss says so, not the sampling
        logits.fill_diagonal_(float("-inf"))  # the positive is never its own negative
        neg_tuple = rows[torch.multinomial(logits.softmax(dim=1), 1).squeeze(1)]
        neg_anchor = rows[torch.multinomial(logits.T.softmax(dim=1), 1).squeeze(1)]
        anchor_rows = torch.cat([rows, rows, neg_anchor])
        tuple_rows = torch.cat([rows, neg_tuple, rows])
        target = torch.cat([torch.ones(n), torch.zeros(2 * n)]).to(volumes.device)
        mine = _mine(rows, local)
        if mine is not None and mine.numel() == 0:
            return _none_here(feats) + sum(p.sum() for p in self.head.parameters()) * 0.0
        if mine is not None:  # this process's pairs: its positives, its anchors' and its tuples' negatives
            pick = torch.cat([mine, mine + n, mine + 2 * n])
            anchor_rows, tuple_rows, target = anchor_rows[pick], tuple_rows[pick], target[pick]
        per = F.binary_cross_entropy_with_logits(self.score(feats, masks, anchor_rows, tuple_rows), target,
                                                 reduction="none")
        return per.mean() if mine is None else per.sum() / (3 * n)
