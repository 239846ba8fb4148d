"""Frozen pretrained weights are stored by reference, checked on load, and copied in for sharing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from fixture_modalities import edit_model_config
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import nn

import gramx
from gramx.cli import main
from gramx.train.config import parse_config
from gramx.errors import ConfigError, GramxError, PluginError
from gramx.model.model import GramxModel, load_model
from gramx.train.config import build_model
from gramx.model.pretrained import folder_digest
from gramx.train.loop import train
from gramx.embed import embed_values


class PretrainedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: str = ""
    freeze: bool = True


class PretrainedEncoder(nn.Module):
    """A linear layer loaded from ``folder/weights.safetensors`` (the 'pretrained' part) + one trained from scratch."""

    def __init__(self, cfg: PretrainedConfig):
        super().__init__()
        self.tower = nn.Linear(8, 6)
        self.tower.load_state_dict(load_file(f"{cfg.folder}/weights.safetensors"))
        self.extra = nn.Linear(6, 6)
        self.pretrained_weights = {"tower.": cfg.folder}
        self.feature_dim = 6
        if cfg.freeze:
            self.tower.requires_grad_(False)

    def forward(self, x):
        return self.extra(self.tower(x))


def load_values(value, cfg) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


PRE = gramx.Modality(name="pre", load=load_values, build_encoder=PretrainedEncoder, config=PretrainedConfig)


class Plugin:
    @gramx.hookimpl
    def gramx_register_modalities(self, register):
        register(PRE)


@pytest.fixture
def folder(tmp_path, fixture_plugins):
    status = fixture_plugins.register_plugin(Plugin(), name="pre")
    assert status.error is None, status.error
    path = tmp_path / "pretrained-tower"
    path.mkdir()
    torch.manual_seed(5)
    save_file(nn.Linear(8, 6).state_dict(), str(path / "weights.safetensors"))
    (path / "config.json").write_text("{}")
    return path


def _run(tmp_path, folder, freeze=True, **sections):
    rows = [{"id": f"r{i}", "label": i % 3, "pre": [float((i * 7 + j) % 5) / 5 for j in range(8)],
             "vector": [float((i + j) % 3) for j in range(8)]} for i in range(12)]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"modalities": {"pre": {"options": {"folder": str(folder), "freeze": freeze}}, "vector": {}},
            "dim": 4, "loss": {"anchor": "pre"}, "data": {"train": str(manifest), "batch_size": 4},
            "optim": {"max_steps": 2, "lr": 0.05}, "output": {"dir": str(tmp_path / "run")},
            "logging": {"progress": False, "tensorboard": False}, **sections}
    return parse_config(data, tmp_path), manifest


def _keys(model_dir):
    return set(load_file(str(model_dir / "model.safetensors")))


def _same(a: GramxModel, b: GramxModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_frozen_pretrained_weights_are_referenced_not_copied(tmp_path, folder):
    run, manifest = _run(tmp_path, folder)
    model_dir = train(run)
    keys = _keys(model_dir)
    assert not any(k.startswith("encoders.pre.tower.") for k in keys)
    assert {"encoders.pre.extra.weight", "heads.pre.net.1.weight"} <= keys
    refs = json.loads((model_dir / "config.json").read_text())["modalities"]["pre"]["pretrained"]
    assert refs == [{"prefix": "tower.", "path": str(folder.resolve()), "sha256": folder_digest(folder)}]
    assert "pretrained-tower" in (model_dir / "README.md").read_text()
    checkpoint = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    assert not any(k.startswith("encoders.pre.tower.") for k in _keys(checkpoint))

    model = load_model(model_dir)
    assert torch.equal(model.encoders["pre"].tower.weight, load_file(str(folder / "weights.safetensors"))["weight"])
    again = load_model(model.save_pretrained(tmp_path / "again"))
    assert _same(model, again)
    values = [[0.1 * j for j in range(8)]]
    assert torch.equal(embed_values(model, "pre", values), embed_values(again, "pre", values))


def test_a_run_resumes_from_checkpoints_that_reference_the_folder(tmp_path, folder):
    run, _ = _run(tmp_path, folder, output={"dir": str(tmp_path / "run"), "checkpoint_every": 1})
    train(run)
    longer = run.model_copy(update={"optim": run.optim.model_copy(update={"max_steps": 3})})
    assert load_model(train(longer, resume=True)).config.training["steps"] == 3


def test_trained_or_changed_pretrained_weights_are_stored(tmp_path, folder):
    trained = train(_run(tmp_path, folder, freeze=False)[0])
    assert "encoders.pre.tower.weight" in _keys(trained)
    assert json.loads((trained / "config.json").read_text())["modalities"]["pre"]["pretrained"] == []

    model = build_model(_run(tmp_path, folder)[0])
    with torch.no_grad():
        model.encoders["pre"].tower.weight.add_(1.0)  # frozen, but no longer the folder's values
    saved = model.save_pretrained(tmp_path / "changed")
    assert "encoders.pre.tower.weight" in _keys(saved)
    assert _same(model, load_model(saved))


def test_a_missing_or_changed_folder_is_a_clear_error(tmp_path, folder):
    model_dir = train(_run(tmp_path, folder)[0])
    moved = folder.rename(tmp_path / "elsewhere")
    with pytest.raises(GramxError, match="pretrained-tower, which is missing") as err:
        load_model(model_dir)
    assert "gramx export" in err.value.hint
    moved.rename(folder)
    (folder / "config.json").write_text('{"changed": true}')
    with pytest.raises(GramxError, match="whose files have changed since the model was saved"):
        load_model(model_dir)


def test_a_self_contained_copy_carries_the_folder(tmp_path, folder, capsys):
    model_dir = train(_run(tmp_path, folder)[0])
    shared = tmp_path / "shared"
    assert main(["export", str(model_dir), "-o", str(shared)]) == 0
    config = json.loads((shared / "config.json").read_text())["modalities"]["pre"]
    copy = config["pretrained"][0]["path"]
    assert copy.startswith("pretrained/pretrained-tower-") and config["config"]["folder"] == copy
    assert (shared / copy / "weights.safetensors").is_file()
    original = load_model(model_dir)
    shutil.rmtree(folder)
    model = load_model(shared)
    assert _same(original, model)
    # saved over itself (no longer self-contained), it keeps the copy it references
    resaved = model.save_pretrained(shared)
    assert _same(original, load_model(resaved))
    assert main(["export", str(model_dir), "-o", str(tmp_path / "x")]) == 1
    assert "which is missing" in capsys.readouterr().err


def test_lora_without_a_plugin_that_adds_it_names_one(tmp_path, folder):
    run, _ = _run(tmp_path, folder)
    run.modalities["pre"].lora = {"r": 2}
    with pytest.raises(PluginError, match="no installed plugin adds them") as err:
        build_model(run)
    assert "gramx-hf" in err.value.hint


def test_an_identity_head_passes_the_features_through(tmp_path, folder):
    run, _ = _run(tmp_path, folder)
    run.modalities["pre"].head.identity = True
    with pytest.raises(ConfigError, match="identity head needs encoder features of the space's size"):
        build_model(run)
    model = build_model(run.model_copy(update={"dim": 6})).eval()
    x = torch.rand(3, 8)
    assert torch.equal(model.embed("pre", x), torch.nn.functional.normalize(model.encoders["pre"](x), dim=-1))


def _refer(model_dir, path: str, sha256: str = "0" * 64) -> None:
    ref = {"prefix": "net.", "path": path, "sha256": sha256}
    edit_model_config(model_dir, lambda c: c["modalities"]["vector"].update(pretrained=[ref]))


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
