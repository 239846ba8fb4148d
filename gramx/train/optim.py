"""Optimisation set-up from a run's ``optim`` section: AdamW, the LR schedule and mixed precision."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from gramx.train.config import OptimConfig
from gramx.errors import GramxError

__all__ = ["build_optimizer", "lr_factor", "build_scheduler", "Precision"]


def _param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: weight matrices decay, biases and scales do not."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(modules: Iterable[nn.Module], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``modules``; weight decay on weight matrices only."""
    return torch.optim.AdamW(_param_groups(modules, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_factor(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """The LR multiplier per step: linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant)."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """The LR schedule of :func:`lr_factor`, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))


class Precision:
    """Mixed precision for ``optim.amp``: the autocast context and, for fp16, a gradient scaler.

    ``auto`` means bf16 on CUDA and full precision on CPUs; fp16 needs CUDA.
    """

    def __init__(self, amp: str, device: torch.device):
        if amp == "fp16" and device.type != "cuda":
            raise GramxError("optim.amp=fp16 needs a CUDA device", hint="use bf16 or none on CPU")
        if amp == "auto":
            self.dtype = torch.bfloat16 if device.type == "cuda" else None
        else:
            self.dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self):
        """The forward pass's autocast context (a no-op in full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled for fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> torch.Tensor:
        """Unscale the gradients (fp16); returns their global norm (not finite when one of them is not)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grad_clip: float | None,
             norm: torch.Tensor, skip: bool = False) -> None:
        """Clip the gradients to the global norm ``grad_clip`` (``norm``: :meth:`unscale`'s) and take the
        optimizer step; ``skip`` leaves the weights as they are."""
        if not skip and grad_clip:
            torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
        if self.scaler is not None:
            if not skip:
                self.scaler.step(optimizer)
            self.scaler.update()
        elif not skip:
            optimizer.step()
