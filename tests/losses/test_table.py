"""The table of loss types: each builds a term that trains, names a score that exists, and checks its run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gramx.losses.config import LossConfig
from gramx.losses.contrastive import Temperature
from gramx.losses.table import LOSS_TYPES, LossType
from gramx.scores.similarity import SCORES

MODALITIES = ["audio", "text", "video"]


def batch(b: int = 6, dim: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {n: F.normalize(torch.randn(b, dim, generator=gen), dim=-1).requires_grad_() for n in MODALITIES}


@pytest.mark.parametrize("name", LOSS_TYPES)
def test_each_type_builds_a_term_that_gives_a_finite_loss_with_gradients(name):
    kind = LOSS_TYPES[name]
    cfg = LossConfig(type=name, fusion_hidden=16, gate_dim=8)
    assert kind.score in SCORES and kind.describe(cfg)
    if kind.check is not None:
        kind.check(cfg, MODALITIES)  # a run of three modalities anchored on text suits every type
    options = {"modalities": MODALITIES, "dim": 8} if kind.space else {}
    term = kind.build(cfg, Temperature(0.1), options)
    feats = batch()
    loss = term(feats, None)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in feats.values())


@pytest.mark.parametrize("name, cfg, modalities, problem", [
    ("triangle", {}, MODALITIES + ["depth"], "loss.type triangle needs exactly three modalities, the run has 4"),
    ("gram", {"anchor": "depth"}, MODALITIES, r"loss.anchor 'depth' is not one of \['audio', 'text', 'video', 'all'\]"),
    ("pairwise", {"anchor": "all"}, MODALITIES, r"loss.anchor 'all' is not one of \['audio', 'text', 'video'\]"),
    ("confu", {}, ["audio", "text"], "loss.type confu needs 3 or more modalities, the run has 2"),
    ("pmrl", {}, ["text"], "loss.type pmrl needs 2 or more modalities"),
])
def test_a_run_the_type_cannot_train_is_refused_by_its_check(name, cfg, modalities, problem):
    with pytest.raises(ValueError, match=problem):
        LOSS_TYPES[name].check(LossConfig(type=name, **cfg), modalities)


def test_the_gram_type_regularises_its_volume_when_asked():
    plain = LOSS_TYPES["gram"].describe(LossConfig())
    assert plain == "the GRAM volume loss (anchor text)"
    assert "minus 2.0 x the anchor's cosines" in LOSS_TYPES["gram"].describe(LossConfig(cosine_weight=2.0))
    feats = batch()
    regularised = LOSS_TYPES["gram"].build(LossConfig(cosine_weight=2.0), Temperature(0.1), {})(feats, None)
    assert regularised != LOSS_TYPES["gram"].build(LossConfig(), Temperature(0.1), {})(feats, None)


def test_a_loss_type_must_score_by_a_known_similarity():
    with pytest.raises(ValueError, match="score 'dot' is not one of"):
        LossType(lambda cfg, t, options: None, lambda cfg: "", "dot")
