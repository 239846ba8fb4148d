"""Retrieval metrics over score matrices (R@K, median and mean rank, mAP) and zero-shot accuracy.

Ranks are pessimistic about ties: a candidate that scores exactly as well as the query's
best relevant item counts against the query (duplicate captions are common in real test
sets, and resolving ties in the query's favour inflates recall).
"""

from __future__ import annotations

import numpy as np
import torch

from gramx.scores.similarity import SCORES

__all__ = ["RECALL_AT", "ranks", "average_precision", "retrieval_metrics", "zeroshot_accuracy"]


RECALL_AT = (1, 5, 10)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _oriented(scores, higher_is_better: bool, positives) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores as float64 with higher = better, and the boolean relevance matrix."""
    s = _as_tensor(scores).detach().to(torch.float64)
    if s.dim() != 2:
        raise ValueError(f"scores must be [Nq, Nc], got shape {tuple(s.shape)}")
    s = s if higher_is_better else -s
    s = s.nan_to_num(nan=float("-inf"))  # a broken (NaN) score is the worst score, never a hit
    if positives is None:
        if s.shape[0] > s.shape[1]:
            raise ValueError(f"diagonal ground truth needs Nq <= Nc, got {tuple(s.shape)}; pass positives=")
        pos = torch.zeros(s.shape, dtype=torch.bool)
        pos.fill_diagonal_(True)
    else:
        pos = _as_tensor(positives).to(torch.bool)
        if pos.shape != s.shape:
            raise ValueError(f"positives shape {tuple(pos.shape)} does not match scores {tuple(s.shape)}")
    if not pos.any(dim=1).all():
        raise ValueError("every query needs at least one relevant candidate")
    return s, pos.to(s.device)


def ranks(scores, higher_is_better: bool = False, positives=None) -> torch.Tensor:
    """1-based rank of each query's best relevant candidate, ties counted against the query.

    ``rank = 1 + (candidates strictly better) + (irrelevant candidates with the same score)``.
    """
    s, pos = _oriented(scores, higher_is_better, positives)
    best = s.masked_fill(~pos, float("-inf")).max(dim=1, keepdim=True).values
    better = (s > best).sum(dim=1)
    tied = ((s == best) & ~pos).sum(dim=1)
    return 1 + better + tied


def average_precision(scores, higher_is_better: bool = False, positives=None) -> torch.Tensor:
    """Average precision per query (fraction in [0, 1]); tied irrelevant items rank first."""
    s, pos = _oriented(scores, higher_is_better, positives)
    s, pos = s.cpu(), pos.cpu()
    # Best score first; among equal scores the irrelevant candidates come first.
    order = torch.from_numpy(np.lexsort((pos.numpy(), -s.numpy()), axis=-1))
    rel = pos.gather(1, order).double()
    hits = rel.cumsum(dim=1)
    position = torch.arange(1, s.shape[1] + 1, dtype=torch.float64)
    return (hits / position * rel).sum(dim=1) / rel.sum(dim=1)


def retrieval_metrics(scores, higher_is_better: bool = False, positives=None) -> dict[str, float]:
    """Recall@1/5/10 (percent), median and mean rank (1-based) and mAP (percent).

    ``scores[Nq, Nc]``: by default smaller is better (volumes); pass
    ``higher_is_better=True`` for similarities. Ground truth is the diagonal unless
    ``positives[Nq, Nc]`` (bool) marks the relevant candidates of each query.
    """
    r = ranks(scores, higher_is_better, positives).to(torch.float64)
    metrics = {f"R@{k}": 100.0 * (r <= k).double().mean().item() for k in RECALL_AT}
    metrics["MedR"] = float(np.median(r.cpu().numpy()))
    metrics["MeanR"] = r.mean().item()
    metrics["mAP"] = 100.0 * average_precision(scores, higher_is_better, positives).mean().item()
    return metrics


def zeroshot_accuracy(items: torch.Tensor, prompts: torch.Tensor, labels, score: str = "cosine") -> float:
    """Accuracy (percent) of classifying each item by its best-scoring class prompt.

    ``items[N, D]`` and ``prompts[C, D]`` are L2-normalised embeddings (prompt c for
    class c); ``labels[N]`` holds class indices. ``score`` names the similarity of
    :data:`gramx.scores.similarity.SCORES` (its value for two vectors: the cosine for ``cosine``
    and ``mip``, the sine of the angle for ``volume``, the distance for ``area``).
    """
    labels = _as_tensor(labels).to(items.device).long()
    kind = SCORES[score]
    scores = kind.pair(items, prompts.to(items.device))
    predicted = scores.argmax(dim=1) if kind.higher_is_better else scores.argmin(dim=1)
    return 100.0 * (predicted == labels).double().mean().item()
