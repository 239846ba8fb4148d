"""Optimisation set-up: AdamW groups (weight decay on matrices only), the warm-up and cosine schedule,
mixed precision on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gramx.errors import GramxError
from gramx.train.config import OptimConfig
from gramx.train.optim import Precision, build_optimizer, build_scheduler, lr_factor

CPU = torch.device("cpu")


def test_weight_decay_applies_to_trainable_matrices_only():
    net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Conv1d(3, 2, 1))
    frozen = nn.Linear(3, 3).requires_grad_(False)
    temperature = nn.Parameter(torch.zeros(()))
    holder = nn.Module()
    holder.log_t = temperature
    optimizer = build_optimizer([net, frozen, holder], OptimConfig(lr=0.5, weight_decay=0.1, betas=(0.8, 0.9)))
    decay, no_decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [(3, 4), (2, 3, 1)] and decay["weight_decay"] == 0.1
    assert [p.shape for p in no_decay["params"]] == [(3,), (3,), (3,), (2,), ()] and no_decay["weight_decay"] == 0.0
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["betas"] == (0.8, 0.9)


def test_warm_up_then_cosine_decay_to_the_floor():
    factor = lr_factor(OptimConfig(warmup_steps=4, min_lr_ratio=0.1), total_steps=14)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0
    assert factor(9) == pytest.approx(0.55)  # half-way: the mean of 1 and the floor
    assert factor(14) == pytest.approx(0.1) and factor(30) == pytest.approx(0.1)
    values = [factor(s) for s in range(4, 15)]
    assert values == sorted(values, reverse=True)


def test_a_constant_schedule_and_none_without_warm_up():
    constant = lr_factor(OptimConfig(warmup_steps=2, schedule="constant"), total_steps=10)
    assert [constant(s) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    cosine = lr_factor(OptimConfig(), total_steps=10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0, abs=1e-12)


def test_the_scheduler_sets_the_learning_rate_of_each_step():
    cfg = OptimConfig(lr=0.2, warmup_steps=2, min_lr_ratio=0.5)
    optimizer = build_optimizer([nn.Linear(2, 2)], cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps=6)
    factor, seen = lr_factor(cfg, 6), []
    for _ in range(7):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen == [[pytest.approx(0.2 * factor(s))] * 2 for s in range(7)]


def test_precision_on_cpu():
    for amp in ("auto", "none"):
        precision = Precision(amp, CPU)
        assert precision.dtype is None and precision.scaler is None
        with precision.autocast():
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    bf16 = Precision("bf16", CPU)
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(GramxError, match="optim.amp=fp16 needs a CUDA device") as info:
        Precision("fp16", CPU)
    assert info.value.hint == "use bf16 or none on CPU"


def test_a_step_clips_to_the_global_norm_and_a_skipped_step_changes_nothing():
    layer = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    params = list(layer.parameters())
    precision = Precision("none", CPU)
    precision.backward((layer(torch.tensor([[3.0, 0.0, 4.0]])) * 2).sum())  # gradient [6, 0, 8], norm 10
    norm = precision.unscale(optimizer, params)
    assert norm.item() == pytest.approx(10.0)
    precision.step(optimizer, params, grad_clip=None, norm=norm, skip=True)
    assert layer.weight.tolist() == [[1.0, 1.0, 1.0]]
    precision.step(optimizer, params, grad_clip=5.0, norm=norm)
    assert layer.weight.tolist() == [[pytest.approx(-2.0), 1.0, pytest.approx(-3.0)]]  # 1 - [3, 0, 4]
