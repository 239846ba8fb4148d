"""Gram volume of k vectors, and the fast projection form used for retrieval.

``vol(v1..vk) = sqrt(det(G))`` with ``G[i, j] = vi . vj``. It is computed here by
modified Gram-Schmidt: the volume is the product of the norms of the vectors' residuals,
which is more accurate than ``sqrt(det(G))`` for small volumes and has bounded, finite
gradients for degenerate tuples (identical or collinear vectors).

For retrieval of a query ``q`` against a candidate tuple ``C`` (m vectors) the volume
factorises: ``vol(q, C) = vol(C) * |q - U U^T q|`` where ``U`` is an orthonormal basis of
``C``'s span, so scoring ``Nq`` queries against ``Nc`` candidates takes one matrix product
``U_i q^T`` per basis vector and chunk of candidates, and never forms ``[Nq, Nc, m+1, m+1]``
Gram matrices. :class:`VolumeIndex` keeps the bases, to score many query batches.

All functions compute in float32 (float64 for float64 inputs), also under autocast; only a
:class:`VolumeIndex` built with ``score_dtype`` opts into half-precision products on CUDA.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from gramx.scores.topk import RunningTopk
from gramx.scores.volume_kernel import fused_available, fused_volumes

__all__ = [
    "gram_volume",
    "volume_matrix",
    "volume_topk",
    "VolumeIndex",
]

#: Elements of the ``[Nq, chunk, m]`` projection block kept in memory at once, per device
#: type. On CPUs mid-sized blocks (32 MB in float32, two thirds of it live at once) balance
#: cache reuse against per-operation overhead; on GPUs large blocks keep kernel launches few.
DEFAULT_BLOCK_ELEMENTS = 1 << 23
CUDA_BLOCK_ELEMENTS = 1 << 26
#: Numbers of the ``[n, m, d]`` candidate block orthonormalised at once on CPUs (8 MB in
#: float32, ~1,400 3-tuples of 512-d vectors): mostly cache-resident through the passes,
#: yet few enough operations that thread start-up does not dominate.
BUILD_BLOCK_ELEMENTS = 1 << 21


def _block_elements(device: torch.device, block_elements: int | None) -> int:
    if block_elements is not None:
        return max(1, int(block_elements))
    return DEFAULT_BLOCK_ELEMENTS if device.type == "cpu" else CUDA_BLOCK_ELEMENTS


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _full_precision(device: torch.device):
    """Disable autocast so that the volume math never runs in fp16/bf16."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _tracks_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _SafeSqrt(torch.autograd.Function):
    """``sqrt(max(x, 0))`` whose gradient stays finite at and below zero.

    The forward value is exact; the backward divides by ``max(sqrt(x), floor)``, so a
    zero volume gets a bounded gradient instead of ``inf * 0 = nan``. ``floor`` should
    be the accuracy of ``sqrt(x)``: below it the value is rounding noise, and so would
    be ``1 / sqrt(x)``.
    """

    @staticmethod
    def forward(ctx, x, floor):
        root = x.clamp(min=0).sqrt()
        ctx.save_for_backward(root)
        ctx.floor = floor
        return root

    @staticmethod
    def backward(ctx, grad):
        (root,) = ctx.saved_tensors
        floor = ctx.floor
        denom = root.clamp(min=floor) if isinstance(floor, float) else torch.maximum(root, floor)
        return grad / (2 * denom), None


def safe_sqrt(x: torch.Tensor, floor: float | torch.Tensor | None = None) -> torch.Tensor:
    """Square root with exact forward values and finite gradients at zero.

    ``floor`` (default: the dtype's machine epsilon) bounds ``1 / sqrt(x)`` in the backward.
    """
    if floor is None:
        floor = torch.finfo(x.dtype).eps
    return _SafeSqrt.apply(x, floor)


def _mgs(x: torch.Tensor, mask: torch.Tensor | None, passes: int = 1):
    """Modified Gram-Schmidt over the vectors of ``x[..., k, d]``, differentiable.

    ``passes=2`` projects each residual out twice ("twice is enough"): the rounding error
    of the first projection coefficient leaves a component along the earlier vectors that
    dominates the residual when it is tiny; the second pass removes it (25x more accurate
    at volume 1e-6 in float32).
    """
    eps = torch.finfo(x.dtype).eps
    if mask is not None:
        # where, not multiply: a missing slot may hold anything (NaN included)
        x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
    basis, norms = [], []
    for i in range(x.shape[-2]):
        r = x[..., i, :]
        for _ in range(passes):
            for u in basis:
                r = torch.addcmul(r, torch.linalg.vecdot(r, u).unsqueeze(-1), u, value=-1)
        norm = torch.linalg.vector_norm(r, dim=-1)
        basis.append(r / norm.clamp(min=eps).unsqueeze(-1))
        if mask is not None:
            norm = torch.where(mask[..., i], norm, torch.ones_like(norm))
        norms.append(norm)
    if not basis:
        return x, x.new_ones(x.shape[:-1])
    return torch.stack(basis, dim=-2), torch.stack(norms, dim=-1)


def _mgs_into(x: torch.Tensor, mask: torch.Tensor | None, passes: int, basis: torch.Tensor, norms: torch.Tensor):
    """:func:`_mgs` without autograd, writing into ``basis[n, k, d]`` and ``norms[n, k]``.

    Every step runs in place on the output rows, so a block makes no temporaries beyond
    the projection coefficients.
    """
    eps = torch.finfo(x.dtype).eps
    for i in range(x.shape[1]):
        r = basis[:, i]
        if mask is None:
            r.copy_(x[:, i])
        else:
            torch.where(mask[:, i, None], x[:, i], torch.zeros((), dtype=x.dtype, device=x.device), out=r)
        for _ in range(passes):
            for j in range(i):
                u = basis[:, j]
                r.addcmul_(torch.linalg.vecdot(r, u).unsqueeze(-1), u, value=-1)
        norm = torch.linalg.vector_norm(r, dim=-1)
        norms[:, i] = norm
        r.div_(norm.clamp_(min=eps).unsqueeze(-1))
    if mask is not None:
        norms.masked_fill_(~mask, 1.0)


def _orthonormalise(
    x: torch.Tensor, mask: torch.Tensor | None, block_elements: int | None = None, passes: int = 1
):
    """Modified Gram-Schmidt over the vectors of ``x[..., k, d]``.

    Returns ``(basis, norms)``: ``basis[..., i, :]`` is the unit residual of vector i
    against the earlier ones (zero for a missing vector) and ``norms[..., i]`` the
    residual's length (1 for a missing vector, so it drops out of the product).
    Without autograd, tuples are processed in place in blocks of about ``block_elements``
    numbers (default: :data:`BUILD_BLOCK_ELEMENTS`), small enough to stay in cache.
    """
    k, d = x.shape[-2:]
    lead = x.shape[:-2]
    if _tracks_grad(x):
        return _mgs(x, mask, passes)
    n = lead.numel()
    if block_elements is None:
        block_elements = BUILD_BLOCK_ELEMENTS if x.device.type == "cpu" else CUDA_BLOCK_ELEMENTS
    step = max(1, block_elements // max(1, k * d))
    flat = x.reshape(n, k, d)
    flat_mask = None if mask is None else mask.reshape(n, k)
    basis = torch.empty_like(flat)
    norms = flat.new_empty(n, k)
    for s in range(0, n, step):
        block_mask = None if flat_mask is None else flat_mask[s : s + step]
        _mgs_into(flat[s : s + step], block_mask, passes, basis[s : s + step], norms[s : s + step])
    return basis.reshape(*lead, k, d), norms.reshape(*lead, k)


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
        _, norms = _orthonormalise(x.to(_working_dtype(x.dtype)), mask, passes=2)
        return norms.prod(dim=-1)


@dataclass
class VolumeIndex:
    """Candidate tuples prepared for volume retrieval.

    ``basis[Nc, m, d]`` holds an orthonormal basis of each candidate's span (zero rows for
    missing or degenerate vectors) and ``volume[Nc]`` each candidate's own Gram volume.
    Build it once with :meth:`build` and score any number of queries against it.

    ``score_dtype`` (``torch.bfloat16`` or ``torch.float16``) opts into faster, less exact
    scoring on CUDA: the fused kernel multiplies queries and a copy of the basis in that
    dtype on tensor cores, accumulating in float32 (about 1e-3 relative error instead of
    1e-7). Without it, and wherever the fused kernel does not run, scoring stays in float32.
    """

    basis: torch.Tensor
    volume: torch.Tensor
    score_dtype: torch.dtype | None = None
    _score_basis: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    higher_is_better = False

    @classmethod
    def build(
        cls, candidates: torch.Tensor, mask: torch.Tensor | None = None, block_elements: int | None = None,
        score_dtype: torch.dtype | None = None,
    ) -> "VolumeIndex":
        """Prepare ``candidates[Nc, m, d]`` (optionally ``mask[Nc, m]``) for retrieval."""
        if score_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"score_dtype must be None, torch.bfloat16 or torch.float16, not {score_dtype}")
        if candidates.dim() != 3:
            raise ValueError(f"candidates must be [Nc, m, d], got shape {tuple(candidates.shape)}")
        if mask is not None and mask.shape != candidates.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match candidates {tuple(candidates.shape[:-1])}")
        with _full_precision(candidates.device):
            basis, norms = _orthonormalise(candidates.to(_working_dtype(candidates.dtype)), mask, block_elements)
        return cls(basis=basis, volume=norms.prod(dim=-1), score_dtype=score_dtype)

    def __len__(self) -> int:
        return self.basis.shape[0]

    def _chunk_size(self, num_queries: int, block_elements: int | None) -> int:
        per_candidate = max(1, num_queries * self.basis.shape[1])
        return max(1, _block_elements(self.basis.device, block_elements) // per_candidate)

    def _chunk_volumes(self, q: torch.Tensor, q_norm2: torch.Tensor, start: int, stop: int, grad: bool):
        """Volumes of every query against candidates ``start:stop``, candidate-major ``[n, Nq]``.

        One product ``U_i @ q^T`` per basis vector i, accumulated into ``|q|^2 - sum_i
        (U_i q)^2`` in place: at most two ``[n, Nq]`` blocks are alive at once, and the sum
        runs over contiguous rows.
        """
        basis = self.basis[start:stop]
        n, m, _ = basis.shape
        volume = self.volume[start:stop, None]
        if grad or m == 0:
            # |q|^2 - |U^T q|^2 is accurate to ~eps |q|^2, so its root to ~sqrt(eps) |q|
            floor = q_norm2.sqrt() * torch.finfo(q.dtype).eps ** 0.5
            residual = q_norm2.expand(n, q.shape[0])
            for i in range(m):
                proj = basis[:, i] @ q.T
                residual = torch.addcmul(residual, proj, proj, value=-1)
            return volume * safe_sqrt(residual, floor)
        residual = None
        for i in range(m):
            proj = basis[:, i] @ q.T
            if residual is None:
                residual = torch.addcmul(q_norm2, proj, proj, value=-1)
            else:
                residual.addcmul_(proj, proj, value=-1)
            del proj
        return residual.clamp_(min=0).sqrt_().mul_(volume)

    def _prepare_queries(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = queries.to(self.basis.dtype)
        return q, (q * q).sum(-1).unsqueeze(0)

    def _check_queries(self, queries: torch.Tensor) -> None:
        if queries.dim() != 2 or queries.shape[1] != self.basis.shape[2]:
            raise ValueError(
                f"queries must be [Nq, {self.basis.shape[2]}], got shape {tuple(queries.shape)}"
            )

    def _fused_operands(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(q, basis)`` in the scoring dtype for the fused kernel, or None where it does not run.

        With ``score_dtype`` the basis copy in that dtype is made on first use and kept.
        """
        dtype = self.score_dtype or self.basis.dtype
        if not fused_available(self.basis.device, dtype) or _tracks_grad(queries, self.basis, self.volume):
            return None
        if dtype == self.basis.dtype:
            return queries.to(dtype), self.basis
        if self._score_basis is None:
            self._score_basis = self.basis.to(dtype)
        return queries.to(dtype), self._score_basis

    def volumes(self, queries: torch.Tensor, block_elements: int | None = None) -> torch.Tensor:
        """``[Nq, Nc]`` volumes of ``(q_i, C_j)``; differentiable in queries and candidates.

        On CUDA with Triton installed, scoring without gradients runs the fused kernel of
        :mod:`gramx.scores.volume_kernel` (in ``score_dtype`` when the index has one).
        """
        self._check_queries(queries)
        fused = self._fused_operands(queries)
        if fused is not None:
            return fused_volumes(*fused, self.volume)
        with _full_precision(queries.device):
            q, q_norm2 = self._prepare_queries(queries)
            step = self._chunk_size(q.shape[0], block_elements)
            starts = range(0, len(self), step)
            if _tracks_grad(q, self.basis, self.volume):
                chunks = [self._chunk_volumes(q, q_norm2, s, min(s + step, len(self)), True) for s in starts]
                return torch.cat(chunks, dim=0).T.contiguous() if chunks else q.new_empty(q.shape[0], 0)
            out = q.new_empty(q.shape[0], len(self))
            for s in starts:
                out[:, s : s + step] = self._chunk_volumes(q, q_norm2, s, min(s + step, len(self)), False).T
            return out

    def scores(self, queries: torch.Tensor, block_elements: int | None = None) -> torch.Tensor:
        """The volumes as scores (smaller is better), like the other indexes of :mod:`gramx.scores.similarity`."""
        return self.volumes(queries, block_elements)

    @torch.no_grad()
    def search(
        self, queries: torch.Tensor, k: int = 10, block_elements: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` smallest volumes per query and their candidate indices, ``[Nq, k]`` each.

        Memory stays bounded by ``block_elements`` (and a ``[Nq, TOPK_WIDTH]`` block, see
        :mod:`gramx.scores.topk`) whatever the number of candidates: a running top-k keeps the best.
        """
        self._check_queries(queries)
        k = min(k, len(self))
        fused = self._fused_operands(queries)
        with _full_precision(queries.device):
            q, q_norm2 = self._prepare_queries(queries)
            step = self._chunk_size(q.shape[0], block_elements)
            best = RunningTopk(k)
            for start in range(0, len(self), step):
                stop = min(start + step, len(self))
                if fused is None:  # candidate-major [n, Nq]; its transpose is a free view
                    best.add(self._chunk_volumes(q, q_norm2, start, stop, False).T)
                else:
                    best.add(fused_volumes(fused[0], fused[1][start:stop], self.volume[start:stop]))
            return best.result(q.shape[0], q)


def volume_matrix(
    q: torch.Tensor,
    c: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_elements: int | None = None,
) -> torch.Tensor:
    """Volumes of ``(q_i, c_j1..c_jm)`` for every query i and candidate tuple j.

    ``q[Nq, d]``, ``c[Nc, m, d]``, optional ``mask[Nc, m]`` (bool, missing candidate
    vectors are left out). Returns ``[Nq, Nc]``; smaller means a better match.
    Candidates are processed in chunks of at most ``block_elements`` projections
    (default: :data:`DEFAULT_BLOCK_ELEMENTS` on CPU, :data:`CUDA_BLOCK_ELEMENTS` otherwise).
    To score many query batches against the same candidates, build a :class:`VolumeIndex`
    once instead.
    """
    return VolumeIndex.build(c, mask).volumes(q, block_elements)


def volume_topk(
    q: torch.Tensor,
    c: torch.Tensor,
    k: int = 10,
    mask: torch.Tensor | None = None,
    block_elements: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best (smallest-volume) candidate tuples for each query: ``(volumes, indices)``."""
    return VolumeIndex.build(c, mask).search(q, k, block_elements)
