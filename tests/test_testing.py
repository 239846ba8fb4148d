"""The conformance kit: a good modality passes every check, one that breaks the contract fails by name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fixture_modalities import TEXT, VECTOR, VectorConfig, VectorEncoder, load_vector

from gramx.errors import LoadError
from gramx.testing import CHECKS, ConformanceError, ModalityConformance, check_modality

SAMPLES = [[0.5] * 8, list(np.linspace(-1, 1, 8))]


class TestTheFixtureVectorsConform(ModalityConformance):
    """Each check as a pytest test, through the base class plugin authors subclass."""

    modality = VECTOR
    samples = SAMPLES
    bad_inputs = [[1.0, 2.0]]


def test_good_modalities_pass_every_check(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(8, dtype=np.float32))
    assert check_modality(VECTOR, [str(tmp_path / "a.npy"), *SAMPLES], bad_inputs=[[1.0]]) == list(CHECKS)
    assert check_modality(TEXT, ["one caption", "and a longer one"], bad_inputs=[3]) == list(CHECKS)


def load_plain_error(value, cfg):
    if value == "this-file-does-not-exist.gramx":
        return np.load(value)  # FileNotFoundError: no LoadError
    return load_vector(value, cfg)


def load_unnamed(value, cfg):
    try:
        return load_vector(value, cfg)
    except LoadError:
        raise LoadError("an input", "cannot be read") from None


class Frozen(VectorEncoder):
    def __init__(self, cfg: VectorConfig):
        super().__init__(cfg)
        self.requires_grad_(False)


class Noisy(VectorEncoder):
    def forward(self, x):
        return super().forward(x) + torch.randn(len(x), self.feature_dim)


class Wide(VectorEncoder):
    def forward(self, x):
        return torch.cat([super().forward(x)] * 2, dim=1)


@pytest.mark.parametrize("change, problem", [
    ({"load": load_plain_error}, "bad input 'this-file-does-not-exist.gramx' raised FileNotFoundError, not "
     "gramx.LoadError"),
    ({"load": load_unnamed}, "vector: LoadError for 'this-file-does-not-exist.gramx' does not name it"),
    ({"load": lambda value, cfg: torch.zeros(8)}, "bad input 'this-file-does-not-exist.gramx' loaded without error"),
    ({"build_encoder": Frozen}, "vector: encoder has no trainable parameters"),
    ({"build_encoder": Noisy}, "vector: encoder is not deterministic in eval mode"),
    ({"build_encoder": Wide}, "vector: encoder.feature_dim is 16 but it returns 32 features"),
], ids=["plain exception", "unnamed file", "no error", "frozen", "random", "wrong width"])
def test_a_modality_that_breaks_the_contract_fails_naming_what(change, problem):
    broken = dataclasses.replace(VECTOR, **change)
    with pytest.raises(ConformanceError, match=problem):
        check_modality(broken, SAMPLES)


def test_the_kit_needs_samples_and_checks_the_bad_inputs_given():
    with pytest.raises(ConformanceError, match="vector: give at least one sample input"):
        check_modality(VECTOR, [])
    with pytest.raises(ConformanceError, match=r"bad input \[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0\] loaded"):
        check_modality(VECTOR, SAMPLES, bad_inputs=[[0.0] * 8])
