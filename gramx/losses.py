"""Contrastive losses over a batch of n-modality tuples.

Each loss is a small ``nn.Module`` called as ``loss(feats, masks=None)`` with
``feats = {modality: [B, D]}`` (L2-normalised) and optional presence
``masks = {modality: [B] bool}``. Parts are injectable in the style of
pytorch-metric-learning: the similarity (``distance``), the reducer of per-sample
losses and the temperature module.

- :class:`GramLoss`: GRAM's volume contrastive loss, anchor vs the tuple of the others.
- :class:`PairwiseInfoNCE`: the CLIP / ImageBind baseline, anchored or over all pairs.
- :class:`DataAnchorMatching`: GRAM's matching head with volume-mined hard negatives.

:class:`Objective` sums a run's weighted terms; :data:`LOSS_TYPES` is the table of the
``loss.type`` values a run file may name, and :func:`build_objective` assembles the
objective a run's ``loss`` section describes. A loss raises :class:`NothingToContrast`
when no sample of the batch can take part in it (and only then).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gramx.config import LossConfig
from gramx.distributed import gather_features
from gramx.errors import GramxError
from gramx.volume import volume_matrix

__all__ = [
    "NothingToContrast",
    "Temperature",
    "GramLoss",
    "PairwiseInfoNCE",
    "DataAnchorMatching",
    "symmetric_cross_entropy",
    "anchor_volumes",
    "Objective",
    "LossType",
    "LOSS_TYPES",
    "build_objective",
    "describe_loss",
]

Feats = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None


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


def symmetric_cross_entropy(logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample loss ``(CE(row i -> i) + CE(column i -> i)) / 2`` for square ``logits``."""
    target = torch.arange(logits.shape[0], device=logits.device)
    rows = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    cols = F.cross_entropy(logits.T, target, reduction="none", label_smoothing=label_smoothing)
    return (rows + cols) / 2


def _present(feats: Feats, masks: Masks, name: str) -> torch.Tensor:
    x = feats[name]
    if masks is None or name not in masks:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return masks[name].to(device=x.device, dtype=torch.bool)


def _check_modalities(feats: Feats, names: list[str]) -> None:
    missing = [n for n in names if n not in feats]
    if missing:
        raise KeyError(f"loss needs modalities {missing}, the batch has {sorted(feats)}")


def anchor_volumes(feats: Feats, masks: Masks, anchor: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Volumes of ``(anchor_i, others_j)`` for the samples that can take part.

    A sample takes part when its anchor and at least one other modality are present;
    missing other modalities are left out of its tuple. Returns ``(volumes [n, n],
    rows [n])`` with ``rows`` the indices of those samples in the batch.
    """
    others = sorted(n for n in feats if n != anchor)
    if not others:
        raise ValueError("the GRAM loss needs at least two modalities")
    other_mask = torch.stack([_present(feats, masks, n) for n in others], dim=1)  # [B, m]
    rows = (_present(feats, masks, anchor) & other_mask.any(dim=1)).nonzero().squeeze(1)
    if rows.numel() == other_mask.shape[0]:  # every sample takes part: no gathers
        tuples = torch.stack([feats[n] for n in others], dim=1)  # [B, m, D]
        mask = None if bool(other_mask.all()) else other_mask
        return volume_matrix(feats[anchor], tuples, mask=mask), rows
    tuples = torch.stack([feats[n][rows] for n in others], dim=1)  # [n, m, D]
    return volume_matrix(feats[anchor][rows], tuples, mask=other_mask[rows]), rows


class GramLoss(nn.Module):
    """GRAM volume contrastive loss.

    ``logits[i, j] = -volume(anchor_i, others_j) / temperature``; the loss is the mean of
    the cross-entropy over rows (anchor -> tuple) and over columns (tuple -> anchor),
    target ``i``. ``anchor="all"`` averages the loss over every modality as anchor.
    """

    def __init__(
        self,
        anchor: str = "text",
        temperature: float | Temperature = 0.07,
        label_smoothing: float = 0.1,
        reducer: Callable[[torch.Tensor], torch.Tensor] = torch.mean,
        distance: Callable[[Feats, Masks, str], tuple[torch.Tensor, torch.Tensor]] = anchor_volumes,
    ):
        super().__init__()
        self.anchor = anchor
        self.temperature = temperature if isinstance(temperature, Temperature) else Temperature(temperature)
        self.label_smoothing = label_smoothing
        self.reducer = reducer
        self.distance = distance

    def anchors(self, feats: Feats) -> list[str]:
        """The modalities used as anchor for this batch."""
        if self.anchor == "all":
            return sorted(feats)
        _check_modalities(feats, [self.anchor])
        return [self.anchor]

    def forward(self, feats: Feats, masks: Masks = None) -> torch.Tensor:
        t = self.temperature()
        losses = []
        for anchor in self.anchors(feats):
            volumes, _ = self.distance(feats, masks, anchor)
            if volumes.shape[0] == 0:
                continue
            losses.append(self.reducer(symmetric_cross_entropy(-volumes / t, self.label_smoothing)))
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
        reducer: Callable[[torch.Tensor], torch.Tensor] = torch.mean,
        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.anchor = anchor
        self.temperature = temperature if isinstance(temperature, Temperature) else Temperature(temperature)
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
        _check_modalities(feats, [self.anchor])
        return [(self.anchor, b) for b in names if b != self.anchor]

    def forward(self, feats: Feats, masks: Masks = None) -> torch.Tensor:
        t = self.temperature()
        losses = []
        for a, b in self.pairs(feats):
            rows = (_present(feats, masks, a) & _present(feats, masks, b)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            logits = self.distance(feats[a][rows].float(), feats[b][rows].float()) / t
            losses.append(self.reducer(symmetric_cross_entropy(logits, self.label_smoothing)))
        if not losses:
            raise NothingToContrast("no sample in the batch has both modalities of any pair")
        return torch.stack(losses).mean()


class DataAnchorMatching(nn.Module):
    """GRAM's data-anchor matching (DAM): does this tuple belong together?

    A small MLP scores the concatenation of a tuple's embeddings (modalities in sorted
    order, zeros for missing ones, plus the presence flags). Each anchor is paired with
    its own tuple (positive) and with one other tuple sampled with probability
    ``softmax(-volume / temperature)`` (a hard negative); each tuple is likewise paired
    with a hard-negative anchor. The loss is the binary cross-entropy of the scores.
    """

    def __init__(
        self,
        modalities: list[str],
        dim: int,
        anchor: str = "text",
        hidden: int = 256,
        temperature: float = 0.07,
    ):
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
            present = _present(feats, masks, name)[rows]
            parts.append(feats[name][rows].float() * present.unsqueeze(1))
            flags.append(present.float())
        return self.head(torch.cat(parts + [torch.stack(flags, dim=1)], dim=1)).squeeze(1)

    def forward(self, feats: Feats, masks: Masks = None) -> torch.Tensor:
        _check_modalities(feats, self.modalities)
        with torch.no_grad():
            volumes, rows = anchor_volumes(feats, masks, self.anchor)
        n = rows.numel()
        if n < 2:
            raise NothingToContrast("DAM needs at least two samples with an anchor and another modality")
        logits = -volumes / self.temperature
        logits.fill_diagonal_(float("-inf"))  # the positive is never its own negative
        neg_tuple = rows[torch.multinomial(logits.softmax(dim=1), 1).squeeze(1)]
        neg_anchor = rows[torch.multinomial(logits.T.softmax(dim=1), 1).squeeze(1)]
        anchor_rows = torch.cat([rows, rows, neg_anchor])
        tuple_rows = torch.cat([rows, neg_tuple, rows])
        target = torch.cat([torch.ones(n), torch.zeros(2 * n)]).to(volumes.device)
        return F.binary_cross_entropy_with_logits(self.score(feats, masks, anchor_rows, tuple_rows), target)


class Objective(nn.Module):
    """The contrastive loss plus optional extra terms, summed by weight.

    ``extras`` maps a term's name (``pairwise``, ``dam``) to ``(module, weight)``. Calling it
    returns ``(total, parts)`` with each computed term by name (``contrastive`` first). A
    term that raises :class:`NothingToContrast` for a batch is left out of the sum and of
    ``parts``; when no term can be computed, :class:`NothingToContrast` is raised.
    """

    def __init__(self, contrastive: nn.Module, extras: Mapping[str, tuple[nn.Module, float]] | None = None):
        super().__init__()
        self.contrastive = contrastive
        self.extras = nn.ModuleDict({name: module for name, (module, _) in (extras or {}).items()})
        self.weights = {"contrastive": 1.0, **{name: weight for name, (_, weight) in (extras or {}).items()}}

    @property
    def term_names(self) -> list[str]:
        """The names of the terms, ``contrastive`` first."""
        return list(self.weights)

    def forward(self, feats: Feats, masks: Masks = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {}
        for name, term in (("contrastive", self.contrastive), *self.extras.items()):
            try:
                parts[name] = term(feats, masks)
            except NothingToContrast:
                continue
        if not parts:
            raise NothingToContrast("no term of the objective can use this batch")
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts

    def global_loss(self, feats: Feats, masks: Masks, seed: tuple[int, ...] = (0,),
                    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The objective on the global batch of all processes: ``(loss, parts, global rows)``.

        Features and masks are gathered from every process (gradients flow to the local rows,
        :func:`gramx.distributed.gather_features`). The loss's own randomness (DAM's negative
        sampling) is seeded from ``seed`` so that every process computes the same global loss
        and a resumed run draws the same samples. A batch that no term can use gives a zero
        loss that still reaches every parameter (DDP needs a backward on every process) and
        empty ``parts``.
        """
        feats, masks = gather_features(feats, masks)
        rows = next(iter(feats.values())).shape[0]
        device = next(iter(feats.values())).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda"):
            s = hash(seed) & 0x7FFF_FFFF_FFFF
            torch.default_generator.manual_seed(s)
            if device.type == "cuda":
                torch.cuda.manual_seed(s)
            try:
                loss, parts = self(feats, masks)
            except NothingToContrast:
                loss, parts = sum(f.sum() for f in feats.values()) * 0.0, {}
        return loss, {k: float(v.detach()) for k, v in parts.items()}, rows

    @property
    def temperature(self) -> float:
        """The contrastive term's current temperature."""
        return float(self.contrastive.temperature().detach())


@dataclass(frozen=True)
class LossType:
    """One ``loss.type`` of a run file: how to build its contrastive term and how to name it."""

    build: Callable[[LossConfig, Temperature, dict], nn.Module]
    describe: Callable[[LossConfig], str]


#: The contrastive terms a run's ``loss.type`` may name.
LOSS_TYPES: dict[str, LossType] = {
    "gram": LossType(
        build=lambda cfg, t, extra: GramLoss(anchor=cfg.anchor, temperature=t, **extra),
        describe=lambda cfg: f"the GRAM volume loss (anchor {cfg.anchor})",
    ),
    "pairwise": LossType(
        build=lambda cfg, t, extra: PairwiseInfoNCE(anchor=cfg.anchor, temperature=t, **extra),
        describe=lambda cfg: f"pairwise InfoNCE (anchor {cfg.anchor})",
    ),
    "pairwise_all": LossType(
        build=lambda cfg, t, extra: PairwiseInfoNCE(anchor=None, temperature=t, **extra),
        describe=lambda cfg: "pairwise InfoNCE over all pairs",
    ),
}


def build_objective(cfg: LossConfig, modalities: list[str], dim: int) -> Objective:
    """The objective a run's ``loss`` section describes, for a model with ``modalities`` in ``dim`` dims.

    Every temperature, the extra pairwise term's included, is trained unless
    ``cfg.learn_temperature`` is false.
    """
    extra = {} if cfg.label_smoothing is None else {"label_smoothing": cfg.label_smoothing}
    contrastive = LOSS_TYPES[cfg.type].build(cfg, Temperature(cfg.temperature, learnable=cfg.learn_temperature), extra)
    extras = {}
    if cfg.pairwise_weight:
        anchor = None if cfg.anchor == "all" else cfg.anchor
        pairwise = PairwiseInfoNCE(anchor=anchor, temperature=Temperature(cfg.temperature,
                                                                          learnable=cfg.learn_temperature))
        extras["pairwise"] = (pairwise, cfg.pairwise_weight)
    if cfg.dam_weight:
        dam = DataAnchorMatching(sorted(modalities), dim, anchor=cfg.anchor, hidden=cfg.dam_hidden)
        extras["dam"] = (dam, cfg.dam_weight)
    return Objective(contrastive, extras)


def describe_loss(cfg: LossConfig) -> str:
    """The objective in words, for the model card: ``"the GRAM volume loss (anchor text) + 0.5 x DAM"``."""
    text = LOSS_TYPES[cfg.type].describe(cfg)
    if cfg.pairwise_weight:
        text += f" + {cfg.pairwise_weight} x pairwise InfoNCE"
    return text + (f" + {cfg.dam_weight} x DAM" if cfg.dam_weight else "")
