"""A run's objective: the contrastive term of its loss type plus the extra terms, summed by weight.

:func:`build_objective` builds the term the run's :class:`gramx.losses.table.LossType` makes
and adds the optional ones (a pairwise InfoNCE term, permanent or decaying to zero over a
warm-up; DAM) into an :class:`Objective`, which computes them on the global batch of every
process.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from gramx.errors import ConfigError
from gramx.losses.config import LossConfig
from gramx.losses.contrastive import DataAnchorMatching, NothingToContrast, PairwiseInfoNCE, Temperature
from gramx.losses.table import LossType
from gramx.runtime.distributed import gather_features, sum_scalar

__all__ = ["Objective", "build_objective", "describe_loss"]


class Objective(nn.Module):
    """The contrastive term plus optional extra terms, summed by weight.

    ``extras`` maps a term's name (``pairwise``, ``dam``) to ``(module, weight)`` or
    ``(module, weight, decay_steps)``: such a term's weight falls linearly from ``weight``
    at step 0 to zero at ``decay_steps`` (a warm-up), after which it is no longer computed.
    Calling it returns ``(total, parts)`` with each computed term by name (``contrastive``
    first). A term that raises :class:`NothingToContrast` for a batch is left out of the sum
    and of ``parts``; when no term can be computed, :class:`NothingToContrast` is raised.
    """

    def __init__(self, contrastive: nn.Module, extras: Mapping[str, tuple] | None = None):
        super().__init__()
        self.contrastive = contrastive
        self.extras = nn.ModuleDict({name: spec[0] for name, spec in (extras or {}).items()})
        self.schedule = {"contrastive": (1.0, None), **{name: (spec[1], spec[2] if len(spec) > 2 else None)
                                                         for name, spec in (extras or {}).items()}}

    @property
    def term_names(self) -> list[str]:
        """The names of the terms, ``contrastive`` first."""
        return list(self.schedule)

    def weight(self, name: str, step: int = 0) -> float:
        """The weight of term ``name`` at optimizer step ``step``."""
        weight, decay = self.schedule[name]
        return weight if decay is None else weight * max(0.0, 1.0 - step / decay)

    def active_terms(self, step: int = 0) -> list[str]:
        """The terms that count at ``step`` (a warm-up term stops once its weight is zero)."""
        return [name for name in self.schedule if self.weight(name, step) > 0]

    def forward(self, feats, masks=None, step: int = 0, local: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {}
        for name in self.active_terms(step):
            term = self.contrastive if name == "contrastive" else self.extras[name]
            try:
                parts[name] = term(feats, masks) if local is None else term(feats, masks, local=local)
            except NothingToContrast:
                continue
        if not parts:
            raise NothingToContrast("no term of the objective can use this batch")
        return sum(self.weight(name, step) * value for name, value in parts.items()), parts

    def global_loss(self, feats, masks, seed: tuple[int, ...] = (0,), step: int = 0, local: bool = False,
                    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The objective on the global batch of all processes: ``(loss, parts, global rows)``.

        Features and masks are gathered from every process (:func:`gramx.runtime.distributed.
        gather_features`). By default every process computes the whole global loss and the
        gradient flows to its own rows. ``local=True`` is open_clip's local loss: each process
        computes its own rows' terms against the whole batch (its share of the loss; the
        shares sum to the global loss and the gathered gradients to its gradient), so the
        logits per process grow linearly with the number of processes; ``parts`` are then
        summed over processes for the log. The loss's own randomness (DAM's and Symile's
        negative sampling) is seeded from ``seed`` so that every process draws the same
        negatives and a resumed run draws them again. A batch that no term can use gives a
        zero loss that still reaches every parameter (DDP needs a backward on every process)
        and empty ``parts``.
        """
        feats, masks, mine = gather_features(feats, masks, with_grad=local)
        rows = next(iter(feats.values())).shape[0]
        device = next(iter(feats.values())).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda"):
            s = hash(seed) & 0x7FFF_FFFF_FFFF
            torch.default_generator.manual_seed(s)
            if device.type == "cuda":
                torch.cuda.manual_seed(s)
            try:
                loss, parts = self(feats, masks, step=step, local=mine if local else None)
            except NothingToContrast:
                loss, parts = sum(f.sum() for f in feats.values()) * 0.0, {}
        values = {k: float(v.detach()) for k, v in parts.items()}
        if local:
            values = {k: sum_scalar(v, device) for k, v in values.items()}
        return loss, values, rows

    @property
    def temperature(self) -> float:
        """The contrastive term's current temperature."""
        return float(self.contrastive.temperature().detach())


def build_objective(cfg: LossConfig, kind: LossType, modalities: Sequence[str], dim: int) -> Objective:
    """The objective a run's ``loss`` section (of type ``kind``) describes, for ``modalities`` in ``dim`` dims.

    Every temperature, the extra pairwise term's included, is trained unless
    ``cfg.learn_temperature`` is false.
    """
    options = {} if cfg.label_smoothing is None else {"label_smoothing": cfg.label_smoothing}
    if kind.space:
        options |= {"modalities": sorted(modalities), "dim": dim}
    contrastive = kind.build(cfg, Temperature(cfg.temperature, learnable=cfg.learn_temperature), options)
    extras: dict[str, tuple] = {}
    weight = cfg.pairwise_weight or (1.0 if cfg.pairwise_warmup else None)
    if weight:
        anchor = None if cfg.anchor == "all" or cfg.anchor not in modalities else cfg.anchor
        pairwise = PairwiseInfoNCE(anchor=anchor, temperature=Temperature(cfg.temperature,
                                                                          learnable=cfg.learn_temperature))
        extras["pairwise"] = (pairwise, weight, cfg.pairwise_warmup)
    if cfg.dam_weight:
        dam = DataAnchorMatching(sorted(modalities), dim, anchor=cfg.anchor, hidden=cfg.dam_hidden)
        extras["dam"] = (dam, cfg.dam_weight)
    if cfg.local and "local" not in inspect.signature(contrastive.forward).parameters:
        raise ConfigError(f"loss.type {cfg.type!r} has no local loss (its forward takes no `local`)",
                          hint="set loss.local=false")
    return Objective(contrastive, extras)


def describe_loss(cfg: LossConfig, kind: LossType) -> str:
    """The objective in words, for the model card: ``"the GRAM volume loss (anchor text) + 0.5 x DAM"``."""
    text = kind.describe(cfg)
    if cfg.pairwise_warmup:
        weight = cfg.pairwise_weight or 1.0
        text += f" + pairwise InfoNCE warm-up (weight {weight} -> 0 over {cfg.pairwise_warmup} steps)"
    elif cfg.pairwise_weight:
        text += f" + {cfg.pairwise_weight} x pairwise InfoNCE"
    return text + (f" + {cfg.dam_weight} x DAM" if cfg.dam_weight else "")
