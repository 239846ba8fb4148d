"""The model directory: a damaged, forged or diverged one is refused with an error naming the file and what to do."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from gramx.cli import main
from gramx.errors import GramxError
from gramx.model.model import load_model
from gramx.train.config import build_model


def refused_by_embed(tmp_path, model_dir, capsys, file) -> str:
    """``gramx embed`` with the model fails with one line naming ``file``, never a raw exception."""
    capsys.readouterr()
    assert main(["embed", str(model_dir), str(tmp_path / "val.jsonl"), "-o", str(tmp_path / "index")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gramx: error: {file}") and "--debug" not in err, err
    return err


def _huge_tensor_header(data: bytes) -> bytes:
    header = json.dumps({"x": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}).encode()
    return struct.pack("<Q", len(header)) + header


WEIGHTS = {
    "garbage": lambda data: b"this is not a safetensors file",
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "header size past the end": lambda data: struct.pack("<Q", 1 << 62) + data[8:],
    "header claiming a huge tensor": _huge_tensor_header,
}


@pytest.mark.parametrize("damage", WEIGHTS)
def test_a_damaged_weights_file_names_itself_and_what_to_do(tmp_path, saved, capsys, damage):
    weights = saved / "model.safetensors"
    weights.write_bytes(WEIGHTS[damage](weights.read_bytes()))
    with pytest.raises(GramxError, match="model.safetensors") as info:
        load_model(saved)
    assert "gramx export" in info.value.hint and "train it again" in info.value.hint
    refused_by_embed(tmp_path, saved, capsys, weights)


def test_a_weight_of_another_shape_is_named(saved):
    weights = saved / "model.safetensors"
    state = load_file(str(weights))
    state["heads.text.net.1.weight"] = torch.zeros(3, 3)
    save_file(state, str(weights))
    with pytest.raises(GramxError, match=r"model.safetensors: weight 'heads.text.net.1.weight' has shape \[3, 3\]"):
        load_model(saved)


CONFIGS = {
    "not UTF-8": b"\xff\xfe{}",
    "nested too deeply": b"[" * 100_000,
    "not an object": b"[]",
}


@pytest.mark.parametrize("text", CONFIGS)
def test_a_damaged_config_json_names_itself_and_what_to_do(tmp_path, saved, capsys, text):
    config = saved / "config.json"
    config.write_bytes(CONFIGS[text])
    with pytest.raises(GramxError, match="config.json") as info:
        load_model(saved)
    assert "gramx export" in info.value.hint
    refused_by_embed(tmp_path, saved, capsys, config)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_with_non_finite_weights_is_refused_on_load(tmp_path, saved, capsys, value):
    weights = saved / "model.safetensors"
    state = load_file(str(weights))
    state["heads.point.net.1.weight"][0, 0] = value
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(GramxError, match="model.safetensors: weight 'heads.point.net.1.weight' holds NaN or infinite"):
        load_model(saved)
    err = refused_by_embed(tmp_path, saved, capsys, weights)
    assert "optim.lr" in err


def test_non_finite_weights_are_never_written(tmp_path, run):
    model = build_model(run)
    with torch.no_grad():
        model.heads["text"].net[1].weight[2, 1] = float("nan")
    with pytest.raises(GramxError, match="'heads.text.net.1.weight' holds NaN or infinite values") as info:
        model.save_pretrained(tmp_path / "model")
    assert "optim.lr" in info.value.hint
    assert not [p for p in tmp_path.iterdir() if "model" in p.name]  # neither the model nor a temporary sibling
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    with pytest.raises(GramxError, match="NaN"):
        model.write_files(checkpoint)
    assert not any(checkpoint.iterdir())
