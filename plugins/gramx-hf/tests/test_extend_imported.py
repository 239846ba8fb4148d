"""Growing imported spaces end to end: depth added to a frozen CLIP (SigLIP, CLAP), CLAP bridged into CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from gramx.cli import main
from gramx.model.model import load_model
from gramx_hf.testing import TINY_MODELS
from gramx.embed import embed_values

VALUES = ("texts", "images", "sounds")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Depth maps, point clouds and captions of the ten synthetic shapes: 2 train + 1 test sample per class."""
    from gramx_pointcloud.shapes import generate

    out = tmp_path_factory.mktemp("shapes")
    generate(out, per_class=3, seed=0, test_fraction=0.34, num_points=64, depth_size=32)
    return out


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _tensor_bytes(state: dict, prefixes: tuple[str, ...]) -> int:
    return sum(v.numel() * v.element_size() for k, v in state.items() if k.startswith(prefixes))


def _embeddings(model, media) -> dict[str, torch.Tensor]:
    values = {"text": media["texts"], "image": media["images"], "audio": media["sounds"]}
    with torch.no_grad():
        return {name: embed_values(model, name, values[name]) for name in model.names if name in values}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("architecture", sorted(TINY_MODELS))
def test_depth_joins_an_imported_space_whose_towers_stay_bit_identical(architecture, imported, media, shapes,
                                                                        tmp_path, capsys):
    base = load_model(imported[architecture])
    run = _write(tmp_path / "add-depth.yaml", {
        "modalities": {"depth": {"options": {"size": 32, "width": 8, "feature_dim": 32}}, "text": {}},
        "dim": base.dim,
        "loss": {"type": "gram", "anchor": "text", "pairwise_weight": 0.5},
        "data": {"train": str(shapes / "train.jsonl"), "batch_size": 4},
        "optim": {"max_steps": 4, "lr": 0.01},
        "output": {"dir": "run"},
        "logging": {"progress": False, "tensorboard": False},
    })
    assert main(["extend", "add", str(imported[architecture]), str(run)]) == 0
    model_dir = tmp_path / "run" / "model"
    grown = load_model(model_dir)
    assert sorted(grown.names) == sorted([*base.names, "depth"])
    before, after = _embeddings(base, media), _embeddings(grown, media)
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    assert json.loads((model_dir / "config.json").read_text())["lineage"][-1]["added"] == ["depth"]

    # the directory holds the new modality's weights, the config and the card: the towers are referenced
    state = grown.state_dict()
    trained = _tensor_bytes(state, ("encoders.depth.", "heads.depth."))
    towers = _tensor_bytes(state, tuple(f"encoders.{n}." for n in base.names))
    config = (model_dir / "config.json").stat().st_size + (model_dir / "README.md").stat().st_size
    assert _size(model_dir) <= trained + config + 16_000 < trained + config + towers
    again = load_model(grown.save_pretrained(tmp_path / "again"))
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())

    capsys.readouterr()
    assert main(["eval", str(model_dir), str(shapes / "test.jsonl"), "--classes", str(shapes / "classes.txt"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tuples"] == 10 and "depth" in report["zeroshot"] and "depth->text" in report["retrieval"]


def test_a_clap_space_bridged_into_a_clip_space_end_to_end(imported, media, tmp_path, capsys):
    pools = tmp_path / "pools"
    pools.mkdir()
    captions = [f"{word} {thing}" for word in ("a loud", "a quiet", "a red") for thing in ("cat", "car", "rain")]
    for name, column, values in (("text", "text", captions), ("image", "image", media["images"]),
                                 ("audio", "audio", media["sounds"])):
        (pools / f"{name}.jsonl").write_text("".join(json.dumps({column: v}) + "\n" for v in values))
    bridge = _write(tmp_path / "bridge.yaml", {
        "base": str(imported["CLIPModel"]), "leaf": str(imported["ClapModel"]), "shared": "text",
        "pools": {"text": "pools/text.jsonl", "image": "pools/image.jsonl", "audio": "pools/audio.jsonl"},
        "tau": 0.05, "projector": {"hidden": 16, "depth": 1}, "steps": 30, "batch_size": 8,
        "output": "bridged", "progress": False,
    })
    assert main(["extend", "bridge", str(bridge)]) == 0
    model_dir = tmp_path / "bridged"
    bridged, clip, clap = (load_model(p) for p in (model_dir, imported["CLIPModel"], imported["ClapModel"]))
    assert sorted(bridged.names) == ["audio", "image", "text"]
    ours, theirs = _embeddings(bridged, media), _embeddings(clip, media)
    assert torch.equal(ours["text"], theirs["text"]) and torch.equal(ours["image"], theirs["image"])
    with torch.no_grad():
        projected = bridged.bridges["audio"].eval()(_embeddings(clap, media)["audio"])
    assert torch.allclose(ours["audio"], projected, atol=1e-6)
    assert json.loads((model_dir / "config.json").read_text())["lineage"][-1]["operation"] == "bridge"

    state = bridged.state_dict()
    config = (model_dir / "config.json").stat().st_size + (model_dir / "README.md").stat().st_size
    assert _size(model_dir) <= _tensor_bytes(state, ("bridges.",)) + config + 16_000
    again = load_model(bridged.save_pretrained(tmp_path / "again"))
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())

    index = tmp_path / "index"
    assert main(["embed", str(model_dir), str(pools / "audio.jsonl"), "-o", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", str(model_dir), "--index", str(index), "--query", "the sound of rain", "--modality",
                 "audio", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2
