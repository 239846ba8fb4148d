"""ConFu's objective: pairwise InfoNCE plus each fused pair of modalities against the remaining one.

Contrastive Fusion (Koutoupis et al., CVPR 2026, arXiv 2511.21331; code
https://github.com/estafons/confu, ``src/modules/models/confu.py``): besides the CLIP terms of
every pair of modalities, a small fusion network embeds each pair ``(a, b)`` into the shared
space, ``f_ab = normalize(MLP([z_a, z_b]))``, and InfoNCE aligns ``f_ab`` with the remaining
modality ``c``. The fused terms capture relations no pair shows (an XOR of two modalities
predicts the third), and they give 2 -> 1 retrieval: the pair ``(a, b)`` searches ``c`` by
``cos(f_ab, z_c)`` (:meth:`ConFuLoss.fused`). With ``lambda`` = ``fused_weight``, the loss is the
authors' ``(lambda * sum of fused terms + (1 - lambda) * sum of pairwise terms) / number of
terms``, each term the symmetric cross-entropy of ``cos / temperature``; ``lambda = 0`` leaves
the fusion out (the mean of the pairwise terms, as theirs).

Differences from the authors' code: the fusion network reads the pair's shared-space
embeddings (the only input a gramx loss gets) where theirs reads the encoders' features; with
more than three modalities each pair is fused against every remaining modality; with presence
masks, each term uses the rows where its modalities are present. A saved model carries no
fusion network, so models trained with it score by ``cosine`` (the pairwise terms' similarity);
fused 2 -> 1 retrieval is available from the trained loss module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from gramx.losses.distances import presence
from gramx.losses.contrastive import NothingToContrast, Temperature, symmetric_cross_entropy

__all__ = ["FusionHead", "ConFuLoss"]

Feats = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None


class FusionHead(nn.Module):
    """The authors' fusion MLP: ``Linear -> ReLU -> Dropout -> Linear -> LeakyReLU(0.2) -> Dropout``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConFuLoss(nn.Module):
    """ConFu over ``modalities`` (three or more) in a ``dim``-dimensional space; see the module docstring."""

    def __init__(self, modalities: Sequence[str], dim: int, temperature: float | Temperature = 0.07,
                 fused_weight: float = 0.5, hidden: int = 512, label_smoothing: float = 0.0):
        super().__init__()
        self.names = sorted(modalities)
        if len(self.names) < 3:
            raise ValueError(f"ConFu needs three or more modalities, got {self.names}")
        self.pairs = list(combinations(self.names, 2))
        fused = self.pairs if fused_weight > 0 else []  # weight 0: the authors' pairwise-only ConFu, no heads
        self.heads = nn.ModuleDict({f"{a}+{b}": FusionHead(2 * dim, hidden, dim) for a, b in fused})
        self.temperature = temperature if isinstance(temperature, Temperature) else Temperature(temperature)
        self.fused_weight = fused_weight
        self.label_smoothing = label_smoothing

    def fused(self, feats: Feats, pair: tuple[str, str]) -> torch.Tensor:
        """The fused embeddings ``[B, dim]`` of ``pair`` (two modalities in sorted order), L2-normalised.

        ``fused(feats, (a, b)) @ z_c.T`` scores 2 -> 1 retrieval of ``c`` for the pairs ``(a, b)``.
        """
        a, b = pair
        return F.normalize(self.heads[f"{a}+{b}"](torch.cat([feats[a], feats[b]], dim=-1)), dim=-1)

    def _term(self, q: torch.Tensor, c: torch.Tensor, where: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
        """The symmetric InfoNCE of ``q`` and ``c`` over the rows where ``where`` is true (``None``: no row)."""
        rows = where.nonzero().squeeze(1)
        if rows.numel() == 0:
            return None
        dtype = torch.promote_types(q.dtype, torch.float32)
        logits = q[rows].to(dtype) @ c[rows].to(dtype).T / t
        return symmetric_cross_entropy(logits, self.label_smoothing).mean()

    def forward(self, feats: Feats, masks: Masks = None) -> torch.Tensor:
        there = presence(feats, masks, self.names)
        t = self.temperature()
        terms = []  # (weight, value or None)
        for a, b in self.pairs:
            both = there[a] & there[b]
            terms.append((1 - self.fused_weight, self._term(feats[a], feats[b], both, t)))
            if self.heads:
                fused = self.fused(feats, (a, b))
                terms += [(self.fused_weight, self._term(fused, feats[c], both & there[c], t))
                          for c in self.names if c not in (a, b)]
        terms = [(weight, value) for weight, value in terms if value is not None]
        if not terms:
            raise NothingToContrast("no sample in the batch has two of the modalities")
        return sum(weight * value for weight, value in terms) / len(terms)
