"""Volume retrieval over candidates scored once (streamed from an index), from their Gram matrices.

A :class:`gramx.scores.volume.VolumeIndex` orthonormalises every candidate vector so that
many query batches can be scored against it; for candidates seen once, by a few queries,
that costs about as much as the products themselves. Here the candidates' own Gram
matrix ``G = C C^T = L L^T`` (Cholesky, ``m x m`` per candidate) takes its place::

    vol(q, C)^2 = vol(C)^2 * (|q|^2 - |L^-1 C q|^2),      vol(C) = prod(diag(L))

so a candidate costs the ``m`` products ``C_i q^T`` that any method computes, one pass for
``G`` and an ``m x m`` triangular transform of its products. The basis is implicit: its
error grows with ``cond(C)^2`` instead of ``cond(C)``: volumes of unit vectors agree with
the index's to ~2e-6, and a candidate whose vectors are (nearly) linearly dependent has
volume 0 (see :data:`DEPENDENT`), where the index finds ~1e-7.
"""

from __future__ import annotations

import torch

from gramx.scores.topk import RunningTopk
from gramx.scores.volume import CUDA_BLOCK_ELEMENTS, DEFAULT_BLOCK_ELEMENTS

__all__ = ["CACHE_ELEMENTS", "DEPENDENT", "volume_search_once"]

#: A candidate vector whose residual against the earlier ones has a squared length below
#: ``DEPENDENT * eps`` times its own is taken as dependent on them (the candidate's volume
#: is 0): in float32 that is an angle under ~0.08 degrees to their span, where the squared
#: pivot of ``G``'s factor is rounding error.
DEPENDENT = 16

#: Candidate numbers in one block on CPUs (8 MiB of float32): a block small enough to stay in
#: cache between its Gram matrices and its products (measured with 100 queries against 2 x 512-d
#: candidates: 0.95x the products alone at 2,048 candidates a block, 1.28x at 32,768).
CACHE_ELEMENTS = 1 << 21


def _transforms(candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L^-1 [n, m, m], vol(C) [n])`` of ``candidates [n, m, d]``; volume 0 where ``G`` is (nearly) singular."""
    gram = torch.einsum("nid,njd->nij", candidates, candidates)
    eye = torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(gram)
    pivots = factor.diagonal(dim1=-2, dim2=-1)
    tolerance = DEPENDENT * torch.finfo(gram.dtype).eps * gram.diagonal(dim1=-2, dim2=-1)
    dependent = (info != 0) | (pivots * pivots <= tolerance).any(dim=-1)
    factor = torch.where(dependent[:, None, None], eye, factor)
    return _lower_inverse(factor), pivots.prod(dim=-1).masked_fill(dependent, 0.0)


def _lower_inverse(factor: torch.Tensor) -> torch.Tensor:
    """``L^-1`` of lower-triangular ``factor [n, m, m]`` (positive diagonal) by forward substitution, one
    entry at a time over all ``n``: for ``m x m`` blocks this is several times faster than a batched solve."""
    inverse = torch.zeros_like(factor)
    diagonal = factor.diagonal(dim1=-2, dim2=-1)
    for i in range(factor.shape[-1]):
        inverse[:, i, i] = diagonal[:, i].reciprocal()
        for j in range(i):
            inverse[:, i, j] = -(factor[:, i, j:i] * inverse[:, j:i, j]).sum(-1) / diagonal[:, i]
    return inverse


@torch.no_grad()
def volume_search_once(queries: torch.Tensor, candidates: torch.Tensor, k: int = 10,
                       block_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest volumes of ``(q, C)`` per query of ``queries [Q, d]`` over ``candidates [n, m, d]``.

    Returns ``(volumes [Q, k], indices [Q, k])``, like :meth:`VolumeIndex.search
    <gramx.scores.volume.VolumeIndex.search>`; every vector of every candidate must be
    present. Memory is bounded by ``block_elements`` numbers of ``[Q, n, m]`` products; on
    CPUs a block also holds at most :data:`CACHE_ELEMENTS` candidate numbers, so its Gram
    matrices and its products read it from cache.
    """
    q = queries.float()
    c = candidates.float()
    n, m, d = c.shape
    if block_elements is None:
        block_elements = DEFAULT_BLOCK_ELEMENTS if c.device.type == "cpu" else CUDA_BLOCK_ELEMENTS
    step = max(1, block_elements // max(1, q.shape[0] * m))
    if c.device.type == "cpu":
        step = min(step, max(1, CACHE_ELEMENTS // (m * d)))
    q_norm2 = (q * q).sum(-1, keepdim=True)
    best = RunningTopk(min(k, n))
    for start in range(0, n, step):
        block = c[start:start + step]
        inverse, volume = _transforms(block)
        # vol(C) L^-1 as m x m rows of per-candidate coefficients, so vol(q, C)^2 needs no further pass
        coefficients = (inverse * volume[:, None, None]).permute(1, 2, 0).contiguous()
        products = [q @ block[:, j].T for j in range(m)]  # [Q, n] each: the GEMM bound
        squared = q_norm2 * volume.square()
        for i in range(m):
            projection = products[0] * coefficients[i, 0]
            for j in range(1, i + 1):
                projection.addcmul_(products[j], coefficients[i, j])
            squared.addcmul_(projection, projection, value=-1)
        best.add(squared)  # ranked by the squared volume: the same order, one pass fewer
    squared, indices = best.result(q.shape[0], q)
    return squared.clamp_(min=0).sqrt_(), indices
