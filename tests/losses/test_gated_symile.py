"""Gated Symile (gramx.losses.gated_symile) against its authors' equations, its gradients, and presence masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixture_references import assert_equal_to_reference, passes_gradcheck, unit_batch

from gramx.losses.gated_symile import GatedSymileLoss
from gramx.losses.contrastive import NothingToContrast, Temperature

# ---------------------------------------------------------------------------------------------------
# An independent reference, re-typed from the equations of https://github.com/TillmannRheude/gated_symile
# at commit c8e245ff93345e6785da9066ecc87b053f81314d: architecture.py (ModalityAttentionGate.compute_W
# with gate_mode "attention" and gate_type "sigmoid", apply_for_target with neutral_type
# "random_trainable" and renormalize) and losses/symile.py (symile_gated, negative_sampling "pair"),
# written naively, one gate per (query, candidate) triple. The repository states no license, so no code
# is copied. Its random negatives are replaced by every other row (the positive first).


def reference_gate_weights(gate, names, embeddings):
    """W [P, M, M]: row t holds the weights for target t, 1 on the diagonal."""
    tau = F.softplus(gate.log_temperature) + 0.1
    e = torch.stack(embeddings, dim=1)
    q = F.normalize(torch.stack([gate.queries[n](e[:, i]) for i, n in enumerate(names)], dim=1), dim=-1, eps=1e-6)
    k = F.normalize(torch.stack([gate.keys[n](e[:, i]) for i, n in enumerate(names)], dim=1), dim=-1, eps=1e-6)
    scores = torch.einsum("btd,bmd->btm", q, k) / tau
    w = torch.zeros(e.shape[0], len(names), len(names), dtype=e.dtype)
    for t in range(len(names)):
        others = torch.arange(len(names)) != t
        w_t = torch.sigmoid(scores[:, t, others])
        if gate.null_head is not None:
            null = (gate.null_head(e[:, t]).squeeze(-1) + gate.null_logit[t]) / tau
            w_t = w_t * (1 - torch.sigmoid(null))[:, None]
        w[:, t, others] = w_t
        w[:, t, t] = 1.0
    return w


def reference_gated(gate, t, embeddings, w):
    """G = normalize((1 - alpha) E + alpha (w E + (1 - w) N)), N the normalised neutral directions."""
    w, e = w[:, t, :, None], torch.stack(embeddings, dim=1)
    g = w * e + (1 - w) * F.normalize(gate.neutral, dim=1, eps=1e-6)[None]
    alpha = torch.sigmoid(gate.strength)
    return F.normalize((1 - alpha) * e + alpha * g, dim=2, eps=1e-6).unbind(1)


def reference_gated_symile(loss, names, feats, logit_scale):
    """Mean over targets t of CE over candidates of logit_scale * d^((M-1)/2) * <cand_t, prod_{m != t} G_m>."""
    x = [feats[n] for n in names]
    b, d = x[0].shape
    idx = torch.stack([torch.tensor([i] + [j for j in range(b) if j != i]) for i in range(b)])
    losses = []
    for t in range(len(names)):
        pair = [x[m][idx.reshape(-1)] if m == t else x[m][:, None].expand(b, b, d).reshape(-1, d)
                for m in range(len(names))]
        gated = reference_gated(loss.gate, t, pair, reference_gate_weights(loss.gate, names, pair))
        prod = torch.ones_like(pair[t])
        for m in range(len(names)):
            if m != t:
                prod = prod * gated[m]
        raw = (prod * pair[t]).sum(dim=1).view(b, b) * d ** ((len(names) - 1) / 2)
        losses.append(F.cross_entropy(logit_scale * raw, torch.zeros(b, dtype=torch.long)))
    return sum(losses) / len(losses)

# ---------------------------------------------------------------------------------------------------


def gated(names, d, null=True, width=6, seed=0):
    """A gate far from its start (strength, NULL logits), so that every part of it matters."""
    torch.manual_seed(seed)
    loss = GatedSymileLoss(names, d, temperature=Temperature(0.5, learnable=False), width=width, null=null).double()
    with torch.no_grad():
        loss.gate.strength.fill_(0.4)
        if null:
            loss.gate.null_logit.normal_()
    return loss


@pytest.mark.parametrize("null", [True, False])
def test_gated_symile_equals_the_authors_equations_in_value_and_gradient(null):
    names = ["a", "b", "c"]
    feats, loss = unit_batch(names, 6, 8, seed=1), gated(names, 8, null)
    ours = loss(feats)
    reference = reference_gated_symile(loss, names, feats, 1 / loss.temperature())  # their exp(logit_scale)
    assert_equal_to_reference(ours, reference, list(feats.values()) + list(loss.parameters()))


def test_gated_symile_passes_gradcheck():
    names = ["a", "b", "c"]
    feats, loss = unit_batch(names, 4, 5, seed=2), gated(names, 5, width=3)
    assert passes_gradcheck(loss, feats, {"c": torch.tensor([True, False, True, True])})


def without_c(three):
    """The two-modality loss with ``three``'s parameters for a and b."""
    two = GatedSymileLoss(["a", "b"], 8, temperature=three.temperature, width=6).double()
    state = {k: v for k, v in three.state_dict().items() if ".c." not in k}
    state["gate.neutral"], state["gate.null_logit"] = state["gate.neutral"][:2], state["gate.null_logit"][:2]
    two.load_state_dict(state)
    return two


def test_a_missing_vector_is_ones_and_is_not_gated():
    feats, three = unit_batch(["a", "b", "c"], 6, 8, seed=3), gated(["a", "b", "c"], 8)
    two = without_c(three)
    absent = {"c": torch.zeros(6, dtype=torch.bool)}
    torch.testing.assert_close(three(feats, absent), two({n: feats[n] for n in "ab"}))
    # row by row: a query whose c is missing scores as the two-modality query; the others are gated on c
    there = {"b": torch.ones(6, dtype=torch.bool), "c": torch.tensor([True, False, True, True, False, True])}
    scores = three.scores("a", feats["a"], {m: feats[m] for m in "bc"}, there)
    alone = two.scores("a", feats["a"], {"b": feats["b"]})
    torch.testing.assert_close(scores[[1, 4]], alone[[1, 4]])
    full = three.scores("a", feats["a"], {m: feats[m] for m in "bc"})
    torch.testing.assert_close(scores[[0, 2, 3, 5]], full[[0, 2, 3, 5]])
    with pytest.raises(NothingToContrast):
        three(feats, {n: torch.tensor([n == "a"] * 6) for n in "abc"})
