"""A run's objective: the table of loss types, and the weighted sum of terms a run trains on.

``loss.type`` in a run file names an entry of the loss table: the built-in
:data:`LOSS_TYPES` or one a plugin registers (hook ``gramx_register_objectives``). Each
:class:`LossType` builds the contrastive term, names the similarity a model trained with it
scores by (its ``score``, see :mod:`gramx.similarity`), and checks the run's modalities.
:func:`build_objective` adds the optional terms (a pairwise InfoNCE term, permanent or
decaying to zero over a warm-up; DAM) into an :class:`Objective`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from gramx.confu import ConFuLoss
from gramx.distances import RegularisedVolume
from gramx.distributed import gather_features, sum_scalar
from gramx.errors import ConfigError
from gramx.losses import (
    DataAnchorMatching,
    GramLoss,
    NothingToContrast,
    PairwiseInfoNCE,
    SymileLoss,
    Temperature,
    TriangleLoss,
)
from gramx.gated_symile import GatedSymileLoss
from gramx.pmrl import PMRLLoss
from gramx.similarity import SCORES

if TYPE_CHECKING:
    from gramx.config import LossConfig

__all__ = ["LossType", "LOSS_TYPES", "loss_types", "loss_type", "Objective", "build_objective", "describe_loss"]


@dataclass(frozen=True)
class LossType:
    """One ``loss.type`` of a run file.

    - ``build(cfg, temperature, options) -> nn.Module``: the contrastive term, called as
      ``term(feats, masks)`` (see :mod:`gramx.losses`); ``cfg`` is the run's ``loss``
      section, ``options`` holds ``label_smoothing`` when the run sets it.
    - ``describe(cfg) -> str``: the term in words, for model cards.
    - ``score``: the similarity a model trained with it scores by (a key of
      :data:`gramx.similarity.SCORES`).
    - ``check(cfg, modalities)``: raise ``ValueError`` when the run cannot use the term.
    - ``space``: the term has parameters sized by the run (fusion heads, gates): ``options``
      then also holds the run's ``modalities`` (sorted) and ``dim``.
    """

    build: Callable[[LossConfig, Temperature, dict], nn.Module]
    describe: Callable[[LossConfig], str]
    score: str
    check: Callable[[LossConfig, Sequence[str]], None] | None = None
    space: bool = False

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score {self.score!r} is not one of {sorted(SCORES)}")


def _anchored(cfg: LossConfig, modalities: Sequence[str], allow_all: bool = True) -> None:
    allowed = sorted(modalities) + (["all"] if allow_all else [])
    if cfg.anchor not in allowed:
        raise ValueError(f"loss.anchor {cfg.anchor!r} is not one of {allowed}")


def _three(cfg: LossConfig, modalities: Sequence[str]) -> None:
    if len(modalities) != 3:
        raise ValueError(f"loss.type triangle needs exactly three modalities, the run has {len(modalities)}: "
                         f"{', '.join(sorted(modalities))}")
    _anchored(cfg, modalities)


def _at_least(count: int) -> Callable[[LossConfig, Sequence[str]], None]:
    def check(cfg: LossConfig, modalities: Sequence[str]) -> None:
        if len(modalities) < count:
            raise ValueError(f"loss.type {cfg.type} needs {count} or more modalities, the run has {len(modalities)}: "
                             f"{', '.join(sorted(modalities))}")
    return check


def _gram(cfg: LossConfig, t: Temperature, options: dict) -> nn.Module:
    distance = RegularisedVolume(cfg.cosine_weight) if cfg.cosine_weight else None
    return GramLoss(anchor=cfg.anchor, temperature=t, distance=distance, **options)


def _describe_gram(cfg: LossConfig) -> str:
    regularised = f", minus {cfg.cosine_weight} x the anchor's cosines" if cfg.cosine_weight else ""
    return f"the GRAM volume loss (anchor {cfg.anchor}{regularised})"


#: The built-in loss types.
LOSS_TYPES: dict[str, LossType] = {
    "gram": LossType(_gram, _describe_gram, "volume", _anchored),
    "triangle": LossType(
        lambda cfg, t, options: TriangleLoss(anchor=cfg.anchor, temperature=t, **options),
        lambda cfg: f"the TRIANGLE area loss (anchor {cfg.anchor})", "area", _three),
    "symile": LossType(
        lambda cfg, t, options: SymileLoss(temperature=t, negatives=cfg.negatives),
        lambda cfg: f"the Symile multilinear inner product loss ({cfg.negatives} negatives)", "mip"),
    "pairwise": LossType(
        lambda cfg, t, options: PairwiseInfoNCE(anchor=cfg.anchor, temperature=t, **options),
        lambda cfg: f"pairwise InfoNCE (anchor {cfg.anchor})", "cosine",
        lambda cfg, modalities: _anchored(cfg, modalities, allow_all=False)),
    "pairwise_all": LossType(
        lambda cfg, t, options: PairwiseInfoNCE(anchor=None, temperature=t, **options),
        lambda cfg: "pairwise InfoNCE over all pairs", "cosine"),
    "pmrl": LossType(
        lambda cfg, t, options: PMRLLoss(temperature=t, singular_temperature=cfg.singular_temperature),
        lambda cfg: f"the PMRL leading singular value loss (singular values at temperature {cfg.singular_temperature})",
        "singular", _at_least(2)),
    "confu": LossType(
        lambda cfg, t, options: ConFuLoss(options["modalities"], options["dim"], temperature=t,
                                          fused_weight=cfg.fused_weight, hidden=cfg.fusion_hidden,
                                          label_smoothing=options.get("label_smoothing", 0.0)),
        lambda cfg: f"ConFu: pairwise InfoNCE and fused pairs against the third (fused weight {cfg.fused_weight})",
        "cosine", _at_least(3), space=True),
    "gated_symile": LossType(
        lambda cfg, t, options: GatedSymileLoss(options["modalities"], options["dim"], temperature=t,
                                                width=cfg.gate_dim, null=cfg.gate_null),
        lambda cfg: f"gated Symile (per-candidate gates{', with NULL' if cfg.gate_null else ''})", "mip",
        _at_least(2), space=True),
}


def loss_types() -> dict[str, LossType]:
    """Every loss type: the built-in ones and those installed plugins registered."""
    from gramx.plugins import get_host  # local: the registry imports this module (for LossType)

    return {**LOSS_TYPES, **get_host().objectives()}


def loss_type(name: str) -> LossType:
    """The loss type ``name``; the error lists the available ones."""
    types = loss_types()
    if name not in types:
        raise ConfigError(f"unknown loss.type {name!r}; available: {', '.join(sorted(types))}",
                          hint="an objective a plugin adds appears once the plugin is installed (gramx plugins list)")
    return types[name]


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

        Features and masks are gathered from every process (:func:`gramx.distributed.
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


def build_objective(cfg: LossConfig, modalities: Sequence[str], dim: int) -> Objective:
    """The objective a run's ``loss`` section describes, for a model with ``modalities`` in ``dim`` dims.

    Every temperature, the extra pairwise term's included, is trained unless
    ``cfg.learn_temperature`` is false.
    """
    kind = loss_type(cfg.type)
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


def describe_loss(cfg: LossConfig) -> str:
    """The objective in words, for the model card: ``"the GRAM volume loss (anchor text) + 0.5 x DAM"``."""
    text = loss_type(cfg.type).describe(cfg)
    if cfg.pairwise_warmup:
        weight = cfg.pairwise_weight or 1.0
        text += f" + pairwise InfoNCE warm-up (weight {weight} -> 0 over {cfg.pairwise_warmup} steps)"
    elif cfg.pairwise_weight:
        text += f" + {cfg.pairwise_weight} x pairwise InfoNCE"
    return text + (f" + {cfg.dam_weight} x DAM" if cfg.dam_weight else "")
