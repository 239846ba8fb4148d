"""PMRL's objective: full alignment as a rank-one tuple matrix, without an anchor modality.

Principled Multimodal Representation Learning (Liu et al., 2025; code
https://github.com/Xiaohao-Liu/PMRL, ``model/pmrl.py`` ``forward_ret`` and ``utils/eigen.py``):
a tuple's vectors, the columns of ``X [D, k]``, are fully aligned when ``X`` has rank one,
that is when its largest singular value carries the whole tuple (its Gram matrix ``X^T X``
has one non-zero eigenvalue). GRAM's volume is the product of the singular values, which
vanishes (and loses its gradient) as soon as one of them does; PMRL pushes the largest one
up instead. :class:`PMRLLoss` is the sum, per tuple, of

- the *alignment* term: cross-entropy of the softmax over the tuple's singular values
  ``s / t1``, target the largest (``t1``: ``singular_temperature``, fixed), and
- the contrastive regulariser: InfoNCE over the tuples' leading left singular vectors,
  ``logits[i, j] = u_i . u_j / t2``, target ``i`` (``t2``: the loss's ``temperature``), which
  keeps different tuples' shared directions apart.

Every modality counts alike (no anchor). With presence masks a tuple is made of its present
vectors (a sample takes part when two or more are present). Models trained with it score by
``singular`` (:class:`gramx.scores.similarity.SingularIndex`): the largest singular value of
(query, tuple). One deliberate difference from the authors' code: a singular vector's sign
is arbitrary (the SVD routine picks it), and the regulariser's off-diagonal logits change
sign with it; here ``u`` is taken pointing along the tuple (``u . sum_m x_m >= 0``), so the
loss is a function of the features alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gramx.losses.distances import present
from gramx.losses.contrastive import NothingToContrast, Temperature

__all__ = ["PMRLLoss", "leading_directions"]

Feats = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None


def leading_directions(x: torch.Tensor, there: torch.Tensor, singular_temperature: float,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """PMRL's alignment term ``[n]`` and leading left singular vectors ``[n, D]`` of tuples ``x [n, D, k]``.

    ``there [n, k]`` says which columns are present; the others are left out of their tuple.
    Each vector ``u`` points along its tuple (``u . sum of its columns >= 0``).
    """
    groups, terms, leading = [], [], []
    for pattern in there.unique(dim=0):  # tuples with the same modalities present, as one batch
        rows = (there == pattern).all(dim=1).nonzero().squeeze(1)
        columns = x[rows][:, :, pattern]
        u, s, _ = torch.linalg.svd(columns, full_matrices=False)
        first = u[:, :, 0]
        along = (first.unsqueeze(2) * columns).sum(dim=(1, 2))
        leading.append(first * torch.where(along < 0, -1.0, 1.0).to(first.dtype)[:, None])
        target = torch.zeros(rows.numel(), dtype=torch.long, device=x.device)
        terms.append(F.cross_entropy(s / singular_temperature, target, reduction="none"))
        groups.append(rows)
    order = torch.cat(groups).argsort()
    return torch.cat(terms)[order], torch.cat(leading)[order]


class PMRLLoss(nn.Module):
    """PMRL: maximise each tuple's largest singular value, with a contrastive regulariser; see the module docstring.

    ``temperature``: the regulariser's (``t2``, trainable like every gramx temperature;
    the authors fix it at 0.1); ``singular_temperature``: the singular values' (``t1``, fixed,
    the authors' 0.05). The reducer reduces the per-sample sum of both terms.
    """

    def __init__(self, temperature: float | Temperature = 0.1, singular_temperature: float = 0.05,
                 reducer: Callable[[torch.Tensor], torch.Tensor] = torch.mean):
        super().__init__()
        self.temperature = temperature if isinstance(temperature, Temperature) else Temperature(temperature)
        self.singular_temperature = singular_temperature
        self.reducer = reducer

    def forward(self, feats: Feats, masks: Masks = None) -> torch.Tensor:
        names = sorted(feats)
        if len(names) < 2:
            raise ValueError(f"PMRL needs at least two modalities, the batch has {names}")
        there = torch.stack([present(feats, masks, n) for n in names], dim=1)
        rows = (there.sum(dim=1) >= 2).nonzero().squeeze(1)
        if rows.numel() == 0:
            raise NothingToContrast("no sample in the batch has two modalities")
        dtype = torch.promote_types(feats[names[0]].dtype, torch.float32)
        x = torch.stack([feats[n][rows].to(dtype) for n in names], dim=2)  # [n, D, k]
        alignment, u = leading_directions(x, there[rows], self.singular_temperature)
        target = torch.arange(rows.numel(), device=x.device)
        regulariser = F.cross_entropy(u @ u.T / self.temperature(), target, reduction="none")
        return self.reducer(alignment + regulariser)
