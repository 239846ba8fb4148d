"""PMRL (gramx.losses.pmrl) against its authors' code, its gradients, and presence masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixture_references import assert_equal_to_reference, passes_gradcheck, unit_batch

from gramx.losses.contrastive import NothingToContrast, Temperature
from gramx.losses.pmrl import PMRLLoss, leading_directions

# ---------------------------------------------------------------------------------------------------
# The reference: vendored from https://github.com/Xiaohao-Liu/PMRL at commit
# c3997e997ebd5fb4affe02cfa89ea9bf6aef3fef, utils/eigen.py (eigenvalue_computation_pmcl) and the loss
# lines of model/pmrl.py (PMRL.forward_ret, loss_intra_ and loss_inter_), unchanged but for the one
# marked line. MIT License, Copyright (c) 2025 the PMRL authors: permission is granted to use, copy,
# modify and distribute this code provided the copyright and permission notice are kept
# (full text: https://github.com/Xiaohao-Liu/PMRL/blob/main/LICENSE).


def eigenvalue_computation_pmcl(modalities):
    stacked_reps = torch.stack(modalities, dim=-1)  # [batch_size, dim, num_reps]
    U_V, S_V, W_V = torch.linalg.svd(stacked_reps, full_matrices=True)
    return U_V, S_V


def reference_losses(modalities, tau1, tau2, along_tuple=True):
    eigenvectors, eigenvalues = eigenvalue_computation_pmcl(modalities)
    eigenvalues = eigenvalues / tau1
    loss_intra_ = F.cross_entropy(eigenvalues, torch.zeros(eigenvalues.shape[0]).to(eigenvalues.device).long())
    principal_eigenvector = eigenvectors[:, :, 0]
    if along_tuple:  # gramx's change: the vector's sign, which the SVD routine picks, points along the tuple
        along = (principal_eigenvector.unsqueeze(2) * torch.stack(modalities, dim=-1)).sum(dim=(1, 2))
        principal_eigenvector = principal_eigenvector * torch.where(along < 0, -1.0, 1.0).to(along.dtype)[:, None]
    loss_inter_ = F.cross_entropy((principal_eigenvector @ principal_eigenvector.T) / tau2,
                                  torch.arange(principal_eigenvector.shape[0]).to(principal_eigenvector.device).long())
    return loss_intra_, loss_inter_

# ---------------------------------------------------------------------------------------------------


def pmrl(tau2=0.1, tau1=0.05):
    return PMRLLoss(temperature=Temperature(tau2, learnable=False), singular_temperature=tau1)


@pytest.mark.parametrize("names", [["a", "b", "c"], ["a", "b", "c", "d"]])
def test_pmrl_equals_the_authors_code_in_value_and_gradient(names):
    feats, loss = unit_batch(names, 7, 10, seed=len(names)), pmrl()
    ours = loss(feats)
    intra, inter = reference_losses([feats[n] for n in names], 0.05, loss.temperature())
    assert_equal_to_reference(ours, intra + inter, list(feats.values()))


def test_only_the_singular_vectors_sign_differs_from_the_authors_code():
    names = ["a", "b", "c"]
    feats = unit_batch(names, 6, 9, seed=5)
    x = torch.stack([feats[n] for n in names], dim=-1)
    alignment, u = leading_directions(x, torch.ones(6, 3, dtype=torch.bool), 0.05)
    intra, _ = reference_losses([feats[n] for n in names], 0.05, 0.1, along_tuple=False)
    torch.testing.assert_close(alignment.mean(), intra, rtol=0, atol=1e-12)  # the unmodified alignment term
    U, _ = eigenvalue_computation_pmcl([feats[n] for n in names])
    torch.testing.assert_close((u * U[:, :, 0]).sum(1).abs(), torch.ones(6, dtype=torch.float64))
    assert bool(((u.unsqueeze(2) * x).sum(dim=(1, 2)) >= 0).all())  # each points along its tuple


def test_pmrl_passes_gradcheck():
    names = ["a", "b", "c"]
    feats = unit_batch(names, 4, 5, seed=2)
    loss = pmrl(0.2, 0.3)
    assert passes_gradcheck(loss, feats, {"c": torch.tensor([True, False, True, True])})


def test_a_missing_vector_leaves_its_tuple_and_lone_vectors_leave_the_batch():
    feats = unit_batch(["a", "b", "c"], 6, 8, seed=3)
    loss = pmrl()
    absent = {"c": torch.zeros(6, dtype=torch.bool)}
    torch.testing.assert_close(loss(feats, absent), loss({n: feats[n] for n in ("a", "b")}))
    lone = {"b": torch.tensor([True, False, True, True, True, True]),
            "c": torch.tensor([True, False, True, True, True, True])}  # row 1 has "a" alone
    kept = [0, 2, 3, 4, 5]
    torch.testing.assert_close(loss(feats, lone), loss({n: v[kept] for n, v in feats.items()}))
    mixed = {"c": torch.tensor([True, False, True, False, True, True])}  # two kinds of tuples in one batch
    rows_ab = [1, 3]
    alignment, _ = leading_directions(torch.stack([feats[n] for n in "abc"], -1), torch.stack(
        [torch.ones(6, dtype=torch.bool)] * 2 + [mixed["c"]], 1), 0.05)
    pairs = leading_directions(torch.stack([feats[n][rows_ab] for n in "ab"], -1),
                               torch.ones(2, 2, dtype=torch.bool), 0.05)[0]
    torch.testing.assert_close(alignment[rows_ab], pairs)
    with pytest.raises(NothingToContrast):
        loss(feats, {n: torch.tensor([n == "a"] * 6) for n in "abc"})
