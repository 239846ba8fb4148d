"""The Modality spec: checked when made, batches stacked or collated, manifest values resolved by its rule."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch

from gramx.errors import PluginError
from gramx.plugins.modality import Modality, resolve_path


class Options(pydantic.BaseModel):
    size: int = 4


def modality(**fields) -> Modality:
    return Modality(**{"name": "sound", "load": lambda value, cfg: torch.zeros(cfg.size),
                       "build_encoder": lambda cfg: torch.nn.Identity(), "config": Options, **fields})


@pytest.mark.parametrize("fields, problem", [
    ({"name": "Sound"}, "invalid modality name 'Sound'"), ({"name": "2d"}, "invalid modality name"),
    ({"load": "load.py"}, "'sound': load must be callable"), ({"collate": 3}, "collate must be callable or None"),
    ({"config": dict}, "config must be a pydantic BaseModel subclass"),
])
def test_a_modality_is_checked_when_made(fields, problem):
    with pytest.raises(PluginError, match=problem):
        modality(**fields)


def test_default_config_and_batches_of_tensors_or_dicts():
    sound = modality()
    assert sound.default_config() == Options(size=4)
    assert sound.make_batch([torch.ones(3), torch.zeros(3)], Options()).shape == (2, 3)
    batch = sound.make_batch([{"x": torch.ones(2), "n": torch.tensor(1)}] * 3, Options())
    assert batch["x"].shape == (3, 2) and batch["n"].tolist() == [1, 1, 1]
    padded = modality(collate=lambda samples, cfg: torch.nn.utils.rnn.pad_sequence(samples, batch_first=True))
    assert padded.make_batch([torch.ones(2), torch.ones(5)], Options()).shape == (2, 5)
    with pytest.raises(PluginError, match=r"samples of different shapes .*\(2,\), \(5,\)") as info:
        sound.make_batch([torch.ones(2), torch.ones(5)], Options())
    assert "collate(samples, cfg)" in info.value.hint


def test_values_resolve_by_the_modalitys_rule(tmp_path):
    assert modality().resolve_value("clips/a.wav", tmp_path) == str(tmp_path / "clips" / "a.wav")
    assert modality().resolve_value("/data/a.wav", tmp_path) == "/data/a.wav"
    assert modality().resolve_value("~/a.wav", tmp_path) == str(Path.home() / "a.wav")
    assert modality(value_is_path=False).resolve_value("a caption", tmp_path) == "a caption"
    own = modality(resolve=lambda value, root: {**value, "path": str(root / value["path"])})
    assert own.resolve_value({"path": "a.srt", "start": 1}, tmp_path) == {"path": str(tmp_path / "a.srt"), "start": 1}
    assert resolve_path([0.5, 1.0], tmp_path) == [0.5, 1.0]  # inline data is not a path
