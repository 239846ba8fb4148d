"""Fused Triton kernel for volume retrieval on CUDA.

Scoring ``Nq`` queries against ``Nc`` candidate bases in plain PyTorch takes ``m`` matrix
products whose ``[Nq, Nc]`` results are written out and read back to form
``vol(C_j) * sqrt(|q|^2 - sum_i (U_ji . q)^2)``. Here one tile of queries x candidates
does the ``m`` products, squares and sums them in registers and writes only the volumes,
so the epilogue costs one write of ``[Nq, Nc]`` instead of ``2m + 1`` passes over it.

:class:`gramx.scores.volume.VolumeIndex` uses it automatically for CUDA tensors when Triton is
installed, in TF32, bfloat16 and float16 (the PyTorch path stays the fallback, the faster
path for strict float32, and the only path for gradients).
``GRAMX_FUSED_VOLUME=0`` turns it off. With ``TRITON_INTERPRET=1`` the same kernel runs on
CPU tensors through Triton's interpreter, which is how the CPU test suite checks it.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["fused_available", "fused_volumes"]

#: Input dtypes the kernel multiplies in (with float32 accumulation); float64 stays in PyTorch.
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: Below this many (query, candidate) pairs one fixed tile is used instead of autotuning,
#: whose few seconds of trial runs per shape would outweigh the work.
SMALL_PROBLEM = 1 << 22


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fused_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`fused_volumes` can score tensors of this device and dtype."""
    if os.environ.get("GRAMX_FUSED_VOLUME", "1") == "0" or dtype not in FUSED_DTYPES:
        return False
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        return False
    if device.type == "cuda" and dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        # IEEE float32 products run without tensor cores, where cuBLAS beats this kernel
        # (H200: 154 ms against 96 ms for 1,000 x 1M, m=3, d=512; BENCHMARKS.md, GPU)
        return False
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    """The kernel, defined on first use: ``(autotuned, fixed tile)``; small problems and the
    interpreter use the latter."""
    import triton
    import triton.language as tl

    @triton.jit
    def volume_tile(
        q_ptr, q_norm2_ptr, basis_ptr, volume_ptr, out_ptr,
        num_queries, num_candidates,
        stride_q, stride_basis_c, stride_basis_m, stride_out_q, stride_out_c,
        M: tl.constexpr, DIM: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        # query tiles vary fastest: neighbouring programs share a candidate tile, so each
        # basis row is read from memory about once while the queries stay in L2
        query_tiles = tl.cdiv(num_queries, BLOCK_Q)
        pid = tl.program_id(0)
        rows = (pid % query_tiles) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        cols = (pid // query_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)
        ks = tl.arange(0, BLOCK_K)
        row_ok, col_ok = rows < num_queries, cols < num_candidates
        # 64-bit offsets: 10M candidates x 1,536 numbers, or 4,000 x 1M outputs, pass 2^31
        q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_q
        basis_cols = basis_ptr + cols.to(tl.int64)[None, :] * stride_basis_c
        q_norm2 = tl.load(q_norm2_ptr + rows, mask=row_ok, other=0.0)
        residual = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32) + q_norm2[:, None]
        for i in tl.static_range(M):
            proj = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
            for k0 in range(0, DIM, BLOCK_K):
                k = k0 + ks
                k_ok = k < DIM
                q = tl.load(q_rows + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                # the basis tile is loaded transposed, [BLOCK_K, BLOCK_C]
                u = tl.load(basis_cols + i * stride_basis_m + k[:, None],
                            mask=col_ok[None, :] & k_ok[:, None], other=0.0)
                proj = tl.dot(q, u, proj, input_precision=PRECISION)
            residual -= proj * proj
        volume = tl.load(volume_ptr + cols, mask=col_ok, other=0.0)
        out = tl.sqrt(tl.maximum(residual, 0.0)) * volume[None, :]
        out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_out_q + cols.to(tl.int64)[None, :] * stride_out_c
        tl.store(out_ptrs, out, mask=row_ok[:, None] & col_ok[None, :])

    configs = [
        triton.Config({"BLOCK_Q": bq, "BLOCK_C": bc, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bq, bc, bk, w, s in [
            (128, 128, 64, 8, 3), (128, 128, 32, 8, 4), (128, 256, 64, 8, 3), (128, 256, 32, 8, 4),
            (256, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 64, 64, 4, 5),
        ]
    ]
    tuned = triton.autotune(configs=configs, key=["M", "DIM", "PRECISION"])(volume_tile)
    return tuned, volume_tile


def _tiles(num_queries: int, num_candidates: int, blocks: dict) -> int:
    """Programs of the one-dimensional launch grid (no 65,535 limit on candidate tiles)."""
    return -(-num_queries // blocks["BLOCK_Q"]) * -(-num_candidates // blocks["BLOCK_C"])


def fused_volumes(
    q: torch.Tensor, basis: torch.Tensor, volume: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[Nq, Nc] = volume[j] * sqrt(max(0, |q_i|^2 - sum_m (basis[j, m] . q_i)^2))``.

    ``q[Nq, d]`` and ``basis[Nc, m, d]`` share a dtype (float32: IEEE products, or TF32 when
    ``torch.backends.cuda.matmul.allow_tf32`` is set; bfloat16/float16: tensor-core products),
    always accumulated in float32. ``volume[Nc]`` is float32; so is ``out`` (it may be a
    column slice of a larger matrix). No autograd.
    """
    if q.dtype != basis.dtype:
        raise ValueError(f"queries ({q.dtype}) and basis ({basis.dtype}) must share a dtype")
    num_queries, dim = q.shape
    num_candidates, m, _ = basis.shape
    q = q.contiguous()
    basis = basis if basis.stride(-1) == 1 else basis.contiguous()
    q_norm2 = q.float().pow(2).sum(-1)
    volume = volume.float().contiguous()
    if out is None:
        out = torch.empty(num_queries, num_candidates, device=q.device, dtype=torch.float32)
    if num_queries == 0 or num_candidates == 0:
        return out
    if m == 0:
        return out.copy_(q_norm2.sqrt()[:, None] * volume[None, :])
    # Triton's default ("tf32") for half inputs, which it multiplies on tensor cores either way;
    # IEEE products for float32 unless PyTorch is allowed TF32 too
    strict = q.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    precision = "ieee" if strict else "tf32"
    tuned, fixed = _kernels()
    args = (q, q_norm2, basis, volume, out, num_queries, num_candidates,
            q.stride(0), basis.stride(0), basis.stride(1), out.stride(0), out.stride(1))
    shape = {"M": m, "DIM": dim, "PRECISION": precision}
    if _interpreting() or num_queries * num_candidates < SMALL_PROBLEM:
        size = 16 if _interpreting() else 64
        block = {"BLOCK_Q": size, "BLOCK_C": size, "BLOCK_K": min(size, 32)}
        fixed[(_tiles(num_queries, num_candidates, block),)](*args, **shape, **block)
    else:
        tuned[lambda meta: (_tiles(num_queries, num_candidates, meta),)](*args, **shape)
    return out
