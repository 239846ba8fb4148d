"""Devices and multi-process training (``torchrun --nproc-per-node N -m gramx train run.yaml``).

The backend is chosen from the device: NCCL on CUDA, gloo on CPU. :func:`gather_features`
all-gathers features and presence masks so that the loss sees the global batch, with the
gradient flowing back to each process's own rows (open_clip's ``gather_features``). Every
process then computes the same global loss; multiplying it by the world size makes DDP's
gradient averaging give exactly the single-process gradient of the global batch (each
process contributes the gradient through its own rows, and the average over ``world``
processes of ``world * dL/dθ_local`` is their sum).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from gramx.errors import GramxError

__all__ = [
    "resolve_device",
    "DistContext",
    "init_distributed",
    "cleanup",
    "processes",
    "share",
    "gather_features",
    "all_gather_object",
    "barrier",
    "sum_scalar",
]


def resolve_device(request: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N``/``cpu`` as given."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(request)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GramxError(f"device {request!r} requested but CUDA is not available", hint="use --device cpu")
    return device


@dataclass
class DistContext:
    """The current process's place in the job: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_world() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: str = "auto") -> DistContext:
    """Set up the process group when launched by torchrun (``WORLD_SIZE > 1``).

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``. Under
    torchrun, ``cuda`` means ``cuda:LOCAL_RANK``.
    """
    rank, world, local_rank = _env_world()
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=60)}
        if backend == "nccl":
            kwargs["device_id"] = resolved
        try:
            dist.init_process_group(**kwargs)
        except Exception as exc:  # pragma: no cover - depends on the launcher
            raise GramxError(f"cannot join the process group ({backend}): {exc}",
                             hint="launch with torchrun --nproc-per-node N -m gramx train RUN.yaml") from exc
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=resolved)


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def processes(device: str = "auto") -> Iterator[DistContext]:
    """:func:`init_distributed` for the block; the process group is left at its end if the block made it."""
    started = dist.is_available() and dist.is_initialized()
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if not started:
            cleanup()


def share(count: int, ctx: DistContext) -> tuple[int, int]:
    """This process's contiguous part ``[first, stop)`` of ``count`` items (the first parts one larger)."""
    base, extra = divmod(count, ctx.world_size)
    first = ctx.rank * base + min(ctx.rank, extra)
    return first, first + base + (ctx.rank < extra)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (a list of one element without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_scalar(value: float, device: torch.device) -> float:
    """Sum a number over all processes."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def _gather_rows(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """All-gather tensors whose first dimension differs per process (pad, gather, trim)."""
    longest = max(sizes)
    padded = x
    if x.shape[0] < longest:
        padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return [p[:n] for p, n in zip(parts, sizes)]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of rows whose backward sums every process's gradient and keeps this process's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.start, ctx.count = sum(sizes[:rank]), sizes[rank]
        return torch.cat(_gather_rows(x, sizes))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.start + ctx.count], None, None


def gather_features(
    feats: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    with_grad: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """All-gather ``feats[name][B_local, D]`` and ``masks[name][B_local]`` from every process.

    Returns ``(feats, masks, local)``: the global batch (processes in rank order) and which of
    its rows are this process's (``[B]`` bool). Without ``with_grad`` only this process's rows
    carry gradient, which suffices when every process computes the whole global loss. With it
    (the local loss, where each process computes its own rows' terms) every row carries
    gradient, and the backward sums the processes' gradients for each row onto its owner.
    Local batch sizes may differ between processes. Without a process group the inputs are
    returned unchanged.
    """
    any_tensor = next(iter(feats.values()))
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(feats), dict(masks), torch.ones(any_tensor.shape[0], dtype=torch.bool, device=any_tensor.device)
    rank = dist.get_rank()
    size = torch.tensor([any_tensor.shape[0]], device=any_tensor.device)
    sizes_t = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    out_feats, out_masks = {}, {}
    for name, x in feats.items():
        if with_grad:
            out_feats[name] = _GatherWithGrad.apply(x, sizes, rank)
            continue
        with torch.no_grad():
            parts = _gather_rows(x.detach(), sizes)
        parts[rank] = x  # the local rows keep their gradient
        out_feats[name] = torch.cat(parts)
    for name, m in masks.items():
        parts = _gather_rows(m.to(device=any_tensor.device, dtype=torch.uint8), sizes)
        out_masks[name] = torch.cat(parts).bool()
    local = torch.zeros(sum(sizes), dtype=torch.bool, device=any_tensor.device)
    local[sum(sizes[:rank]) : sum(sizes[: rank + 1])] = True
    return out_feats, out_masks, local


def average_gradients(parameters, world_size: int, local: bool = False) -> None:
    """Average the gradients of parameters that DDP does not manage (e.g. the temperature).

    Each process computed the gradient of ``world * L`` for these parameters through the
    whole global loss, so the average over processes divided by ``world`` is ``dL/dθ``; with
    the local loss each computed ``world * L_p`` of its share, and their sum divided by
    ``world`` is ``dL/dθ``.
    """
    if world_size == 1:
        return
    for p in parameters:
        if p.grad is None:
            continue
        if dist.is_initialized():
            dist.all_reduce(p.grad)
            p.grad.div_(world_size)
        if not local:
            p.grad.div_(world_size)
