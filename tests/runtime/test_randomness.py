"""Per-sample randomness: a row's draws depend on (seed, epoch, row, modality) only, and leave the caller's alone."""

from __future__ import annotations

import random

import numpy as np
import torch

from gramx.runtime.randomness import sample_seed, seeded


def draws(seed: int) -> tuple:
    with seeded(seed):
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def test_each_row_and_modality_has_its_own_reproducible_seed():
    assert sample_seed(0, 1, 2, "audio") == sample_seed(0, 1, 2, "audio")
    seeds = {sample_seed(0, 1, 2, "audio"), sample_seed(0, 1, 2, "video"), sample_seed(0, 1, 3, "audio"),
             sample_seed(0, 2, 2, "audio"), sample_seed(1, 1, 2, "audio")}
    assert len(seeds) == 5 and all(0 <= s < 1 << 64 for s in seeds)
    assert sample_seed(-1, 0, 0) == sample_seed((1 << 64) - 1, 0, 0)  # any int seed maps into 64 bits


def test_seeded_draws_repeat_whatever_came_before():
    first = draws(sample_seed(0, 0, 5))
    torch.rand(10), np.random.rand(10), random.random()  # another worker's history
    assert draws(sample_seed(0, 0, 5)) == first and draws(sample_seed(0, 0, 6)) != first


def test_the_callers_generators_are_restored():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    draws(12345)
    assert (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()) == expected
