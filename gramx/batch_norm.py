"""Batch statistics over the global batch: BatchNorm layers synchronised across processes.

Under ``torchrun`` every process encodes its own rows, so a plain ``BatchNorm`` normalises
each process's part of the batch with that part's mean and variance, and the running
statistics that get saved come from one process. :func:`use_global_batch_norm` swaps every
BatchNorm layer of a model for a :class:`GlobalBatchNorm`, which in training mode computes
the mean and variance over the rows of all processes, so the forward pass, the gradients and
the running statistics are those of one process holding the global batch. On CUDA it is
PyTorch's ``SyncBatchNorm``; elsewhere (CPU, gloo), where PyTorch has no kernels for it, it
sums per-channel statistics with differentiable all-reduces. The state dict keys do not
change, so saved models load into plain BatchNorm layers.

The synchronisation is a collective: every process must call a layer the same number of
times. When a modality has rows on some processes but none on others (missing values),
:func:`agree_on_sync` turns synchronisation off for that modality's encoder in that
micro-batch, and those layers use the statistics of their own process's rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

__all__ = ["GlobalBatchNorm", "use_global_batch_norm", "agree_on_sync"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.SyncBatchNorm):
    """``BatchNorm`` whose training statistics cover the rows of every process (see the module docstring).

    ``sync = False`` makes it an ordinary BatchNorm over this process's rows.
    """

    sync = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.sync and _world() > 1):
            return super(nn.SyncBatchNorm, self).forward(x)  # plain BatchNorm
        if x.device.type == "cuda":
            return super().forward(x)  # PyTorch's fused SyncBatchNorm
        self._check_input_dim(x)
        return self._global_forward(x)

    def _momentum(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 1.0 / float(self.num_batches_tracked)  # cumulative moving average

    def _global_forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() // x.shape[1]])])
        total = dist_fn.all_reduce(local)  # differentiable: gradients reach every process's rows
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self._momentum()
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def use_global_batch_norm(model: nn.Module) -> int:
    """Replace every BatchNorm layer of ``model`` by a :class:`GlobalBatchNorm`, in place; returns how many.

    The new layers take over the old ones' parameters and buffers (the same tensors), so
    optimizers and saved weights are unaffected.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BATCH_NORMS) and not isinstance(child, GlobalBatchNorm):
                layer = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
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
