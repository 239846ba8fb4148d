"""A damaged, forged or diverged model directory is refused with an error naming the file and what to do."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from fixture_modalities import run_config
from safetensors.torch import load_file, save_file

from gramx.cli import main
from gramx.train.config import parse_config
from gramx.errors import GramxError
from gramx.model.model import load_model
from gramx.train.config import build_model
from gramx.model.pretrained import folder_digest


@pytest.fixture
def run(tmp_path, fixture_plugins):
    return parse_config(run_config(tmp_path), tmp_path)


@pytest.fixture
def saved(tmp_path, run):
    return build_model(run).save_pretrained(tmp_path / "model")


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


def _edit_config(model_dir, change) -> None:
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


SIZES = {
    "dim": lambda c: c.update(dim=10**15),
    "head width": lambda c: c["modalities"]["text"]["head"].update(hidden=10**15),
    "LoRA rank": lambda c: c["modalities"]["text"].update(lora={"r": 10**15}),
    "bridge width": lambda c: c["modalities"]["text"].update(
        bridge={"dim_in": 8, "dim_out": 8, "hidden": 10**15, "depth": 2}),
}


@pytest.mark.parametrize("size", SIZES)
def test_sizes_in_config_json_are_bounded_by_the_schema(saved, size):
    _edit_config(saved, SIZES[size])
    with pytest.raises(GramxError, match=r"config.json: .*less than or equal to 65536"):
        load_model(saved)


def test_a_plugins_sizes_never_build_a_giant(tmp_path, saved, run, capsys):
    _edit_config(saved, lambda c: c["modalities"]["vector"]["config"].update(hidden=10**10))
    with pytest.raises(GramxError, match="config.json: modality 'vector': building it would allocate more than"):
        load_model(saved)
    run.modalities["point"].plugin_config.hidden = 10**10  # a run file asking for the same
    with pytest.raises(GramxError, match="modality 'point': building it would allocate"):
        build_model(run)


def _refer(model_dir, path: str, sha256: str = "0" * 64) -> None:
    ref = {"prefix": "net.", "path": path, "sha256": sha256}
    _edit_config(model_dir, lambda c: c["modalities"]["vector"].update(pretrained=[ref]))


def test_a_reference_to_a_huge_folder_is_refused_before_hashing(tmp_path, saved):
    huge = tmp_path / "huge"
    huge.mkdir()
    for i in range(10_001):
        (huge / f"{i}.bin").touch()
    _refer(saved, str(huge))
    with pytest.raises(GramxError, match=f"{huge}: holds more than 10,000 files"):
        load_model(saved)
    with pytest.raises(GramxError):  # the whole disk: too many files, or an entry it may not read
        folder_digest("/")


def test_relative_references_stay_inside_the_model_directory(tmp_path, saved):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(b"x")
    _refer(saved, "../outside", folder_digest(outside))
    with pytest.raises(GramxError, match="leads outside the model directory"):
        load_model(saved)
    (saved / "pretrained").mkdir()
    (saved / "pretrained" / "link").symlink_to(outside)
    _refer(saved, "pretrained/link", folder_digest(outside))
    with pytest.raises(GramxError, match="leads outside the model directory"):
        load_model(saved)
