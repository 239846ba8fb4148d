"""The table of loss types: what ``loss.type`` in a run file names, how to build it, what it scores by.

Each :class:`LossType` builds a contrastive term (:mod:`gramx.losses`), names the similarity
a model trained with it scores by (its ``score``, a key of
:data:`gramx.scores.similarity.SCORES`) and checks the run's modalities. :data:`LOSS_TYPES`
holds the built-in ones; plugins register more (hook ``gramx_register_objectives``), and
:func:`gramx.plugins.host.loss_type` looks a name up in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from gramx.losses.config import LossConfig
from gramx.losses.confu import ConFuLoss
from gramx.losses.contrastive import GramLoss, PairwiseInfoNCE, SymileLoss, Temperature, TriangleLoss
from gramx.losses.distances import RegularisedVolume
from gramx.losses.gated_symile import GatedSymileLoss
from gramx.losses.pmrl import PMRLLoss
from gramx.scores.similarity import SCORES

__all__ = ["LossType", "LOSS_TYPES"]


@dataclass(frozen=True)
class LossType:
    """One ``loss.type`` of a run file.

    - ``build(cfg, temperature, options) -> nn.Module``: the contrastive term, called as
      ``term(feats, masks)`` (see :mod:`gramx.losses.contrastive`); ``cfg`` is the run's ``loss``
      section, ``options`` holds ``label_smoothing`` when the run sets it.
    - ``describe(cfg) -> str``: the term in words, for model cards.
    - ``score``: the similarity a model trained with it scores by (a key of
      :data:`gramx.scores.similarity.SCORES`).
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
