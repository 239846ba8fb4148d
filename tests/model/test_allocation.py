"""The allocation budget: building a model from any sizes stops with an error before allocating too much."""

from __future__ import annotations

import pytest
import torch
from fixture_modalities import edit_model_config
from torch import nn

from gramx.errors import ConfigError, GramxError
from gramx.model.allocation import AllocationBudget
from gramx.model.model import load_model
from gramx.train.config import build_model


def test_factories_are_counted_before_they_allocate():
    with AllocationBudget("the test model", limit=1000) as budget:
        nn.Linear(10, 10)  # 100 weights + 10 biases
        torch.eye(3, 4)
        torch.zeros((2, 5))
    assert budget.used == 110 + 12 + 10
    with pytest.raises(ConfigError, match="the test model: building it would allocate more than 1,000 values"):
        with AllocationBudget("the test model", limit=1000):
            torch.empty(10**12)  # refused before any memory is asked for


def test_meta_tensors_cost_nothing():
    with AllocationBudget("meta", limit=10) as budget:
        torch.empty(10**12, device="meta")
    assert budget.used == 0


def test_a_plugins_sizes_never_build_a_giant(saved, run):
    edit_model_config(saved, lambda c: c["modalities"]["vector"]["config"].update(hidden=10**10))
    with pytest.raises(GramxError, match="config.json: modality 'vector': building it would allocate more than"):
        load_model(saved)
    run.modalities["point"].plugin_config.hidden = 10**10  # a run file asking for the same
    with pytest.raises(GramxError, match="modality 'point': building it would allocate"):
        build_model(run)
