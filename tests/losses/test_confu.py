"""ConFu (gramx.losses.confu) against its authors' equations, its gradients, and presence masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixture_references import assert_equal_to_reference, passes_gradcheck, unit_batch

from gramx.losses.confu import ConFuLoss
from gramx.losses.contrastive import NothingToContrast, Temperature

# ---------------------------------------------------------------------------------------------------
# An independent reference, re-typed from the equations of https://github.com/estafons/confu at commit
# e7285113f1c1f3225d27e781d3f77560cdc6e44a (src/modules/models/confu.py: ConFu.forward,
# contrastive_loss, pairwise_contrastive_loss; src/modules/encoders/mlp.py: MLP with num_layers=2).
# The repository states no license, so no code is copied. Evaluation mode: dropout is off.


def reference_mlp(x, first, second):
    """MLP: Linear -> ReLU -> Linear -> LeakyReLU(0.2) (each followed by dropout, off here)."""
    return F.leaky_relu(F.linear(F.relu(F.linear(x, first.weight, first.bias)), second.weight, second.bias), 0.2)


def reference_contrastive(a, b, temperature):
    """(CE(a b^T / t, i) + CE(b a^T / t, i)) / 2."""
    logits = a @ b.T / temperature
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def reference_confu(z1, z2, z3, heads, lambda_, temperature):
    """(lambda (clf1 + clf2 + clf3) + (1 - lambda)(cl12 + cl23 + cl31)) / 6, f_ij = normalize(MLP_ij([z_i, z_j]))."""
    f12, f13, f23 = (F.normalize(reference_mlp(torch.cat(pair, dim=-1), *head), dim=-1)
                     for pair, head in zip([(z1, z2), (z1, z3), (z2, z3)], heads))
    pairwise = sum(reference_contrastive(a, b, temperature) for a, b in [(z1, z2), (z2, z3), (z3, z1)])
    fused = sum(reference_contrastive(f, z, temperature) for f, z in [(f12, z3), (f13, z2), (f23, z1)])
    return (lambda_ * fused + (1 - lambda_) * pairwise) / 6

# ---------------------------------------------------------------------------------------------------


def confu(names, d, weight=0.3, hidden=12):
    torch.manual_seed(0)
    return ConFuLoss(names, d, temperature=Temperature(0.07, learnable=False), fused_weight=weight,
                     hidden=hidden).double().eval()


def layers(loss, pair):
    net = loss.heads["+".join(pair)].net
    return net[0], net[3]


def test_confu_equals_the_authors_equations_in_value_and_gradient():
    names = ["a", "b", "c"]
    feats, loss = unit_batch(names, 7, 10, seed=1), confu(names, 10)
    ours = loss(feats)
    heads = [layers(loss, pair) for pair in [("a", "b"), ("a", "c"), ("b", "c")]]
    reference = reference_confu(*(feats[n] for n in names), heads, 0.3, loss.temperature())
    assert_equal_to_reference(ours, reference, list(feats.values()) + list(loss.parameters()))


def test_fused_pairs_retrieve_the_remaining_modality():
    names = ["a", "b", "c"]
    feats, loss = unit_batch(names, 5, 8, seed=2), confu(names, 8)
    first, second = layers(loss, ("a", "b"))
    expected = F.normalize(reference_mlp(torch.cat([feats["a"], feats["b"]], dim=-1), first, second), dim=-1)
    scores = loss.fused(feats, ("a", "b")) @ feats["c"].T  # (a, b) -> c, one row per pair
    torch.testing.assert_close(scores, expected @ feats["c"].T)


def test_confu_passes_gradcheck():
    names = ["a", "b", "c"]
    feats, loss = unit_batch(names, 4, 5, seed=3), confu(names, 5, hidden=4)
    assert passes_gradcheck(loss, feats, {"c": torch.tensor([True, False, True, True])})


def test_each_term_uses_the_rows_where_its_modalities_are_present():
    names = ["a", "b", "c"]
    feats, loss = unit_batch(names, 6, 8, seed=4), confu(names, 8)
    kept = [0, 2, 3, 5]
    masks = {"c": torch.tensor([i in kept for i in range(6)])}
    a, b, c = (feats[n] for n in names)
    fused = {pair: loss.fused(feats, pair) for pair in [("a", "b"), ("a", "c"), ("b", "c")]}
    pairwise = (reference_contrastive(a, b, 0.07) + reference_contrastive(a[kept], c[kept], 0.07)
                + reference_contrastive(b[kept], c[kept], 0.07))
    fused_terms = sum(reference_contrastive(fused[p][kept], z[kept], 0.07)
                      for p, z in [(("a", "b"), c), (("a", "c"), b), (("b", "c"), a)])
    torch.testing.assert_close(loss(feats, masks), (0.3 * fused_terms + 0.7 * pairwise) / 6)
    pairwise_only = confu(names, 8, weight=0.0)  # the authors' lambda = 0: (cl12 + cl23 + cl31) / 3
    assert not list(pairwise_only.parameters())
    torch.testing.assert_close(pairwise_only(feats), sum(reference_contrastive(x, y, pairwise_only.temperature())
                                                         for x, y in [(a, b), (b, c), (c, a)]) / 3)
    absent = {"c": torch.zeros(6, dtype=torch.bool)}  # only the (a, b) pair is left: one term
    torch.testing.assert_close(loss(feats, absent), 0.7 * reference_contrastive(a, b, 0.07))
    with pytest.raises(NothingToContrast):
        loss(feats, {n: torch.tensor([n == "a"] * 6) for n in names})


def test_four_modalities_fuse_every_pair_against_each_remaining_modality():
    names = ["a", "b", "c", "d"]
    feats, loss = unit_batch(names, 5, 6, seed=5), confu(names, 6)
    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    pairwise = sum(reference_contrastive(feats[x], feats[y], 0.07) for x, y in pairs)
    fused = sum(reference_contrastive(loss.fused(feats, p), feats[c], 0.07) for p in pairs for c in names if c not in p)
    torch.testing.assert_close(loss(feats), (0.3 * fused + 0.7 * pairwise) / (6 + 12))
