"""Batch statistics over the global batch: BatchNorm layers synchronised across processes.

Under ``torchrun`` every process encodes its own rows, so a plain ``BatchNorm`` normalises
each process's part of the batch with that part's mean and variance, and the running
statistics that get saved come from one process. :func:`use_global_batch_norm` swaps every
BatchNorm layer of a model for a :class:`GlobalBatchNorm`, which in training mode computes
the mean and variance over the rows of all processes, so the forward pass, the gradients and
the running statistics are those of one process holding the global batch. PyTorch's own
``SyncBatchNorm`` has no CPU kernels and DDP refuses it on CPU (gloo); this one sums
per-channel statistics with differentiable all-reduces, on any device. The state dict keys
do not change, so saved models load into plain BatchNorm layers.

The synchronisation is a collective: every process must call a layer the same number of
times. When a modality has rows on some processes but none on others (missing values),
:func:`agree_on_sync` turns synchronisation off for that modality's encoder in that
micro-batch, and those layers use the statistics of their own process's rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GlobalBatchNorm", "GlobalBatchNorm1d", "GlobalBatchNorm2d", "GlobalBatchNorm3d",
           "use_global_batch_norm", "agree_on_sync"]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _Sum(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: each process's input feeds every output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm:
    """Mixed into a BatchNorm class: training statistics over the rows of every process.

    ``sync = False`` (or one process, or eval mode) makes it the BatchNorm it extends. Each
    process computes its rows' count, mean and squared deviations (float32, or the input's
    wider type); one differentiable all-reduce shares them, Chan et al.'s formula combines
    them into the global mean and variance, and gradients reach every process's rows.
    """

    sync = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.sync and _world() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        count = x.numel() // x.shape[1]
        local_mean = xf.mean(dims) if count else xf.new_zeros(x.shape[1])
        local_m2 = ((xf - local_mean.view(shape)) ** 2).sum(dims)
        # every process's (count, mean, squared deviations) in one all-reduce: each fills its own row
        slot = xf.new_zeros(_world(), 1)
        slot[dist.get_rank()] = 1
        rows = _Sum.apply(slot * torch.cat([xf.new_tensor([count]), local_mean, local_m2]))
        counts, means, m2s = rows[:, :1], rows[:, 1:1 + x.shape[1]], rows[:, 1 + x.shape[1]:]
        total = counts.sum().detach()
        mean = (counts * means).sum(0) / total
        var = (m2s + counts * (means - mean) ** 2).sum(0) / total  # Chan et al.'s parallel variance
        centred = xf - mean.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * total / (total - 1).clamp_min(1)).to(self.running_var.dtype), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


class GlobalBatchNorm1d(GlobalBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the global batch."""


class GlobalBatchNorm2d(GlobalBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the global batch."""


class GlobalBatchNorm3d(GlobalBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` over the global batch."""


_GLOBAL = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}


def use_global_batch_norm(model: nn.Module) -> int:
    """Replace every ``BatchNorm1d/2d/3d`` of ``model`` by its :class:`GlobalBatchNorm`, in place; returns how many.

    The new layers take over the old ones' parameters and buffers (the same tensors), so
    optimizers and saved weights are unaffected. Subclasses of those layers (which may
    compute something else) are left alone.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _GLOBAL:
                layer = _GLOBAL[type(child)](child.num_features, child.eps, child.momentum, child.affine,
                                             child.track_running_stats)
                layer.weight, layer.bias = child.weight, child.bias
                for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                    setattr(layer, buffer, getattr(child, buffer))
                layer.train(child.training)
                setattr(parent, name, layer)
                replaced += 1
    return replaced


def agree_on_sync(encoders: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Synchronise each encoder's :class:`GlobalBatchNorm` layers only where every process has rows.

    One all-reduce of the per-modality row counts. Returns the modalities that some
    processes hold rows of and others do not: their layers use local statistics this time.
    """
    names = [n for n in encoders if n in masks]
    if _world() == 1 or not names:
        return []
    holders = torch.tensor([int(bool(masks[n].any())) for n in names], device=masks[names[0]].device)
    dist.all_reduce(holders)
    partial = []
    for name, count in zip(names, holders.tolist()):
        everyone = count == _world()
        if 0 < count < _world():
            partial.append(name)
        for layer in encoders[name].modules():
            if isinstance(layer, GlobalBatchNorm):
                layer.sync = everyone
    return partial
