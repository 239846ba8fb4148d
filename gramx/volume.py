"""Gram volume of k vectors, and the fast projection form used for retrieval.

``vol(v1..vk) = sqrt(det(G))`` with ``G[i, j] = vi . vj``. It is computed here by
modified Gram-Schmidt: the volume is the product of the norms of the vectors' residuals,
which is more accurate than ``sqrt(det(G))`` for small volumes and has bounded, finite
gradients for degenerate tuples (identical or collinear vectors).

For retrieval of a query ``q`` against a candidate tuple ``C`` (m vectors) the volume
factorises: ``vol(q, C) = vol(C) * |q - U U^T q|`` where ``U`` is an orthonormal basis of
``C``'s span, so scoring ``Nq`` queries against ``Nc`` candidates is one matrix product
``q @ U^T`` per chunk of candidates and never forms ``[Nq, Nc, m+1, m+1]`` Gram matrices.

All functions compute in float32 (float64 for float64 inputs), also under autocast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = [
    "gram_volume",
    "volume_matrix",
    "volume_topk",
    "VolumeIndex",
    "merge_topk",
]

#: Elements of the ``[Nq, chunk, m]`` projection block kept in memory at once.
DEFAULT_BLOCK_ELEMENTS = 1 << 24


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _full_precision(device: torch.device):
    """Disable autocast so that the volume math never runs in fp16/bf16."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class _SafeSqrt(torch.autograd.Function):
    """``sqrt(max(x, 0))`` whose gradient stays finite at and below zero.

    The forward value is exact; the backward divides by ``max(sqrt(x), eps)`` with
    ``eps`` the dtype's machine epsilon, so a zero volume gets a bounded gradient
    instead of ``inf * 0 = nan``.
    """

    @staticmethod
    def forward(ctx, x):
        root = x.clamp(min=0).sqrt()
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx, grad):
        (root,) = ctx.saved_tensors
        eps = torch.finfo(root.dtype).eps
        return grad / (2 * root.clamp(min=eps))


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """Square root with exact forward values and finite gradients at zero."""
    return _SafeSqrt.apply(x)


def _orthonormalise(x: torch.Tensor, mask: torch.Tensor | None):
    """Modified Gram-Schmidt over the vectors of ``x[..., k, d]``.

    Returns ``(basis, norms)``: ``basis[..., i, :]`` is the unit residual of vector i
    against the earlier ones (zero for a missing vector) and ``norms[..., i]`` the
    residual's length (1 for a missing vector, so it drops out of the product).
    """
    eps = torch.finfo(x.dtype).eps
    if mask is not None:
        x = x * mask.unsqueeze(-1).to(x.dtype)
    basis, norms = [], []
    for i in range(x.shape[-2]):
        r = x[..., i, :]
        for u in basis:
            r = r - (r * u).sum(-1, keepdim=True) * u
        norm = safe_sqrt((r * r).sum(-1))
        basis.append(r / norm.clamp(min=eps).unsqueeze(-1))
        if mask is not None:
            norm = torch.where(mask[..., i], norm, torch.ones_like(norm))
        norms.append(norm)
    return torch.stack(basis, dim=-2), torch.stack(norms, dim=-1)


def gram_volume(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Volume ``sqrt(det(X X^T))`` of the k vectors in ``x[..., k, d]``.

    ``mask[..., k]`` (bool) marks present vectors; missing ones are left out, so the
    result equals the volume of the present vectors alone (1 when none is present).
    Returns ``[...]`` in float32 (float64 for float64 input).
    """
    if x.dim() < 2:
        raise ValueError(f"gram_volume expects [..., k, d], got shape {tuple(x.shape)}")
    if mask is not None and mask.shape != x.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match vectors {tuple(x.shape[:-1])}")
    with _full_precision(x.device):
        _, norms = _orthonormalise(x.to(_working_dtype(x.dtype)), mask)
        return norms.prod(dim=-1)


@dataclass
class VolumeIndex:
    """Candidate tuples prepared for volume retrieval.

    ``basis[Nc, m, d]`` holds an orthonormal basis of each candidate's span (zero rows for
    missing or degenerate vectors) and ``volume[Nc]`` each candidate's own Gram volume.
    Build it once with :meth:`build` and score any number of queries against it.
    """

    basis: torch.Tensor
    volume: torch.Tensor

    @classmethod
    def build(cls, candidates: torch.Tensor, mask: torch.Tensor | None = None) -> "VolumeIndex":
        """Prepare ``candidates[Nc, m, d]`` (optionally ``mask[Nc, m]``) for retrieval."""
        if candidates.dim() != 3:
            raise ValueError(f"candidates must be [Nc, m, d], got shape {tuple(candidates.shape)}")
        with _full_precision(candidates.device):
            basis, norms = _orthonormalise(candidates.to(_working_dtype(candidates.dtype)), mask)
        return cls(basis=basis, volume=norms.prod(dim=-1))

    def __len__(self) -> int:
        return self.basis.shape[0]

    def _chunk_size(self, num_queries: int, block_elements: int) -> int:
        per_candidate = max(1, num_queries * self.basis.shape[1])
        return max(1, block_elements // per_candidate)

    def _chunk_volumes(self, q: torch.Tensor, q_norm2: torch.Tensor, start: int, stop: int):
        basis = self.basis[start:stop]
        proj = q @ basis.reshape(-1, basis.shape[-1]).T  # [Nq, chunk * m]
        proj2 = proj.view(q.shape[0], basis.shape[0], basis.shape[1]).pow(2).sum(-1)
        return self.volume[start:stop] * safe_sqrt(q_norm2.unsqueeze(1) - proj2)

    def _prepare_queries(self, queries: torch.Tensor) -> torch.Tensor:
        if queries.dim() != 2 or queries.shape[1] != self.basis.shape[2]:
            raise ValueError(
                f"queries must be [Nq, {self.basis.shape[2]}], got shape {tuple(queries.shape)}"
            )
        return queries.to(self.basis.dtype)

    def volumes(self, queries: torch.Tensor, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
        """``[Nq, Nc]`` volumes of ``(q_i, C_j)``; differentiable in queries and candidates."""
        with _full_precision(queries.device):
            q = self._prepare_queries(queries)
            q_norm2 = (q * q).sum(-1)
            step = self._chunk_size(q.shape[0], block_elements)
            chunks = [
                self._chunk_volumes(q, q_norm2, start, min(start + step, len(self)))
                for start in range(0, len(self), step)
            ]
            return torch.cat(chunks, dim=1)

    @torch.no_grad()
    def search(
        self, queries: torch.Tensor, k: int = 10, block_elements: int = DEFAULT_BLOCK_ELEMENTS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` smallest volumes per query and their candidate indices, ``[Nq, k]`` each.

        Memory stays bounded by ``block_elements`` whatever the number of candidates:
        each chunk's top-k is merged into a running top-k.
        """
        k = min(k, len(self))
        with _full_precision(queries.device):
            q = self._prepare_queries(queries)
            q_norm2 = (q * q).sum(-1)
            step = self._chunk_size(q.shape[0], block_elements)
            best = None
            for start in range(0, len(self), step):
                stop = min(start + step, len(self))
                vols = self._chunk_volumes(q, q_norm2, start, stop)
                values, idx = vols.topk(min(k, stop - start), dim=1, largest=False)
                chunk_best = (values, idx + start)
                best = chunk_best if best is None else merge_topk([best, chunk_best], k)
            return best


def merge_topk(parts: list[tuple[torch.Tensor, torch.Tensor]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge per-shard ``(volumes, indices)`` top-k lists into the global ``k`` smallest.

    Indices must already be global (offset by each shard's start).
    """
    values = torch.cat([v for v, _ in parts], dim=1)
    indices = torch.cat([i for _, i in parts], dim=1)
    top, pos = values.topk(min(k, values.shape[1]), dim=1, largest=False)
    return top, indices.gather(1, pos)


def volume_matrix(
    q: torch.Tensor,
    c: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Volumes of ``(q_i, c_j1..c_jm)`` for every query i and candidate tuple j.

    ``q[Nq, d]``, ``c[Nc, m, d]``, optional ``mask[Nc, m]`` (bool, missing candidate
    vectors are left out). Returns ``[Nq, Nc]``; smaller means a better match.
    Candidates are processed in chunks of at most ``block_elements`` projections.
    """
    return VolumeIndex.build(c, mask).volumes(q, block_elements)


def volume_topk(
    q: torch.Tensor,
    c: torch.Tensor,
    k: int = 10,
    mask: torch.Tensor | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best (smallest-volume) candidate tuples for each query: ``(volumes, indices)``."""
    return VolumeIndex.build(c, mask).search(q, k, block_elements)
