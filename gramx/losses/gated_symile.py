"""Gated Symile's objective: Symile with per-candidate gates that pull unreliable vectors towards learned neutral ones.

Gated Symile (Rheude et al., 2026, arXiv 2604.05834; code
https://github.com/TillmannRheude/gated_symile, ``architecture.py`` ``ModalityAttentionGate``
and ``losses/symile.py`` ``symile_gated``, the "pair" sampling): each modality ``t`` is the
candidate in turn. Scoring candidate ``x_t`` for the query made of another row's vectors
``x_m`` (``m != t``), an attention gate reads the candidate (query projection) and each ``x_m``
(key projection): ``w_m = sigmoid(cos(Q_t x_t, K_m x_m) / tau) * (1 - p_null)``, where the
NULL probability ``p_null = sigmoid((null_head(x_t) + null_logit_t) / tau)`` lets the gate
trust none of the query's vectors. Each ``x_m`` is pulled towards a learned neutral direction
``n_m``, ``g_m = normalize((1 - alpha) x_m + alpha (w_m x_m + (1 - w_m) n_m))`` with a learned
strength ``alpha``, and the score is the multilinear product ``<x_t, prod_m g_m>`` times
``d^((M-1)/2)`` (their variance scaling), over the temperature. Cross-entropy over every
candidate of the batch, averaged over the candidate modalities.

Presence masks and the gate: gramx's masks are the hard, known case of the same idea. A
missing vector is replaced by the all-ones vector, which drops out of the product (as in
:class:`gramx.losses.contrastive.SymileLoss`): a gate shut (``w = 0``) at full strength (``alpha = 1``) on a
fixed neutral direction of ones (the authors' ``neutral_type: ones``, up to scale). The gate
learns the soft case, vectors that are present but unreliable, per candidate. Here masks
come first: a missing vector is ones and is not gated, the variance scaling counts the present
vectors, and only rows with the candidate and another modality take part. The gate acts on
the present vectors.

Computation: ``g_m`` mixes two vectors with per-(query, candidate) weights, so the product over
the query's vectors expands into ``2^(M-1)`` matrix products of the query side against the
candidates, never the ``[B, B, d]`` tensor of gated vectors. Differences from the authors'
code: every other row of the batch is a negative (theirs draws ``pair_num_negatives`` with
replacement); the temperature is gramx's (their ``logit_scale`` is ``log(1 / temperature)``);
the gate is their default configuration (attention, sigmoid, trainable neutral directions).
A saved model carries no gate, so models trained with it score by ``mip`` (ungated Symile);
gated retrieval is available from the trained loss module (:meth:`GatedSymileLoss.scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product

import torch
import torch.nn.functional as F
from torch import nn

from gramx.losses.distances import present, presence
from gramx.losses.contrastive import NothingToContrast, Temperature

__all__ = ["ModalityGate", "GatedSymileLoss"]

Feats = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None


class ModalityGate(nn.Module):
    """The authors' attention gate: projections, NULL head, neutral directions, temperature and strength.

    Initialised as theirs: gate temperature 0.7 (used as ``softplus(log 0.7) + 0.1``), strength
    ``sigmoid(-3)``, random unit neutral directions, NULL logits zero; ``null=False`` leaves out
    the NULL head and logits (``p_null = 0``).
    """

    def __init__(self, modalities: Sequence[str], dim: int, width: int = 256, null: bool = True,
                 temperature: float = 0.7, strength: float = -3.0, eps: float = 1e-6):
        super().__init__()
        names = sorted(modalities)
        self.index = {name: i for i, name in enumerate(names)}
        self.queries = nn.ModuleDict({name: nn.Linear(dim, width, bias=False) for name in names})
        self.keys = nn.ModuleDict({name: nn.Linear(dim, width, bias=False) for name in names})
        self.null_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width), nn.ReLU(),
                                       nn.Linear(width, 1)) if null else None
        self.null_logit = nn.Parameter(torch.zeros(len(names))) if null else None
        self.neutral = nn.Parameter(F.normalize(torch.randn(len(names), dim), dim=1, eps=eps))
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())
        self.strength = nn.Parameter(torch.tensor(float(strength)))
        self.eps = eps

    def weights(self, target: str, candidates: torch.Tensor, queries: Feats) -> dict[str, torch.Tensor]:
        """``{m: [Nq, Nc]}``: how much of query ``i``'s vector of ``m`` is kept when scoring candidate ``j``."""
        tau = F.softplus(self.log_temperature) + 0.1
        q = F.normalize(self.queries[target](candidates), dim=-1, eps=self.eps)
        keep = 1.0
        if self.null_head is not None:
            null = (self.null_head(candidates).squeeze(-1) + self.null_logit[self.index[target]]) / tau
            keep = 1 - torch.sigmoid(null)
        return {m: torch.sigmoid(F.normalize(self.keys[m](x), dim=-1, eps=self.eps) @ q.T / tau) * keep
                for m, x in queries.items()}

    def scores(self, target: str, candidates: torch.Tensor, queries: Feats, there: Masks = None) -> torch.Tensor:
        """``[Nq, Nc]`` gated multilinear products ``<x_t, prod_m g_m>`` (see the module docstring).

        ``queries``: the query tuples' vectors ``{m: [Nq, d]}``; ``there``: their presence
        (a missing vector counts as all ones and is not gated).
        """
        alpha = torch.sigmoid(self.strength)
        weights = self.weights(target, candidates, queries)
        parts = []  # per query modality: its vectors, its neutral direction, the two [Nq, Nc] shares of g_m
        for m, x in queries.items():
            n = F.normalize(self.neutral[self.index[m]], dim=0, eps=self.eps)
            a, c = 1 - alpha + alpha * weights[m], alpha * (1 - weights[m])
            square = a * a * (x * x).sum(-1, keepdim=True) + 2 * a * c * (x @ n)[:, None] + c * c * (n @ n)
            norm = square.clamp(min=self.eps ** 2).sqrt()
            missing = ~present(queries, there, m)[:, None]  # a missing vector: ones, kept whole
            x = torch.where(missing, torch.ones((), dtype=x.dtype, device=x.device), x)
            a, c, norm = a.masked_fill(missing, 1.0), c.masked_fill(missing, 0.0), norm.masked_fill(missing, 1.0)
            parts.append((x, n, a / norm, c / norm))
        total = 0.0
        for neutral_side in product((False, True), repeat=len(parts)):  # expand prod_m (a_m x_m + c_m n_m)
            vector, share = 1.0, 1.0
            for (x, n, a, c), side in zip(parts, neutral_side):
                vector, share = vector * (n if side else x), share * (c if side else a)
            total = total + share * (torch.broadcast_to(vector, parts[0][0].shape) @ candidates.T)
        return total


class GatedSymileLoss(nn.Module):
    """Gated Symile over ``modalities`` in a ``dim``-dimensional space; see the module docstring.

    ``width``: the gate's projection width (their ``gate_d_k``); ``null``: the NULL option.
    """

    def __init__(self, modalities: Sequence[str], dim: int, temperature: float | Temperature = 1.0,
                 width: int = 256, null: bool = True):
        super().__init__()
        self.names = sorted(modalities)
        if len(self.names) < 2:
            raise ValueError(f"gated Symile needs two or more modalities, got {self.names}")
        self.gate = ModalityGate(self.names, dim, width, null)
        self.temperature = temperature if isinstance(temperature, Temperature) else Temperature(temperature)

    def scores(self, target: str, candidates: torch.Tensor, queries: Feats, there: Masks = None) -> torch.Tensor:
        """Retrieval scores ``[Nq, Nc]`` of the query tuples (the other modalities) against ``target`` candidates.

        The gated products with the authors' variance scaling ``d^((M-1)/2)``, ``M`` counting
        each query's present vectors and the candidate; larger is better.
        """
        count = sum(present(queries, there, m).to(candidates.dtype) for m in queries)
        return self.gate.scores(target, candidates, queries, there) * (candidates.shape[-1] ** (count / 2))[:, None]

    def forward(self, feats: Feats, masks: Masks = None) -> torch.Tensor:
        there = presence(feats, masks, self.names)
        t = self.temperature()
        losses = []
        for target in self.names:
            others = [n for n in self.names if n != target]
            rows = (there[target] & torch.stack([there[o] for o in others]).any(dim=0)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            dtype = torch.promote_types(feats[target].dtype, torch.float32)
            logits = self.scores(target, feats[target][rows].to(dtype), {o: feats[o][rows].to(dtype) for o in others},
                                 {o: there[o][rows] for o in others}) / t
            losses.append(F.cross_entropy(logits, torch.arange(rows.numel(), device=logits.device)))
        if not losses:
            raise NothingToContrast("no sample in the batch has a candidate and another modality")
        return torch.stack(losses).mean()
