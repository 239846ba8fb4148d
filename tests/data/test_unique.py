"""Loading each distinct value once: repeated captions and files load once, failures are reported by key."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel

import gramx
from gramx.data.loading import cache_key
from gramx.data.unique import iter_unique, load_unique


class Options(BaseModel):
    pass


def counting(calls: list):
    """A modality whose load records each value it is asked for, and refuses the value "bad"."""

    def load(value, cfg):
        calls.append(value)
        if value == "bad":
            raise ValueError("cannot read it")
        return torch.tensor([float(len(str(value)))])

    return gramx.Modality(name="count", load=load, build_encoder=lambda cfg: torch.nn.Identity(), config=Options,
                          value_is_path=False)


def test_each_distinct_value_is_loaded_once_and_failures_are_kept_by_key():
    calls = []
    values = ["a cat", "a dog", "a cat", [1, 2], [1, 2], "bad", "a dog"]
    samples, failed = load_unique(values, counting(calls), Options())
    assert sorted(map(str, calls)) == sorted(["a cat", "a dog", "[1, 2]", "bad"])  # once each
    assert set(samples) == {"a cat", "a dog", cache_key([1, 2])} and samples["a cat"].tolist() == [5.0]
    assert list(failed) == ["bad"] and "cannot read it" in failed["bad"]


def test_batches_hold_value_sample_and_problem():
    batches = list(iter_unique(["x", "bad", "yy"], counting([]), Options(), batch_size=2))
    assert [len(b) for b in batches] == [2, 1]
    (x, sample, problem), (bad, nothing, why) = batches[0]
    assert (x, sample.tolist(), problem) == ("x", [1.0], None)
    assert bad == "bad" and nothing is None and "cannot read it" in why


@pytest.mark.slow
def test_workers_load_the_same_as_the_main_process():
    values = [f"caption {i % 5}" for i in range(20)]
    alone, _ = load_unique(values, counting([]), Options())
    workers, _ = load_unique(values, counting([]), Options(), workers=2)
    assert set(alone) == set(workers) and all(torch.equal(alone[k], workers[k]) for k in alone)
