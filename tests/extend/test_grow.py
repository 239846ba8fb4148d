"""Growing trained spaces: add a modality to a frozen model; bridge two spaces without pairs."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from fixture_modalities import run_config
from safetensors.torch import load_file

from gramx.cli import main
from gramx.train.config import parse_config
from gramx.errors import ConfigError
from gramx.extend.grow import add_modalities, bridge_spaces, load_bridge_config
from gramx.model.model import load_model
from gramx.train.loop import train
from gramx.embed import embed_manifest


def _train(tmp_path, modalities, out, **sections):
    data = run_config(tmp_path, **sections)
    data["modalities"] = {m: {} for m in modalities}
    data["output"]["dir"] = str(tmp_path / out)
    data["eval"] = {"metrics": ["retrieval"]}
    return data, train(parse_config(data, tmp_path))


def _embed_all(model, manifest):
    emb = embed_manifest(model, manifest)
    return {n: emb.feats[n][emb.masks[n]] for n in emb.feats}


def test_add_modality_keeps_the_frozen_space_bit_identical(tmp_path, fixture_plugins):
    data, base_dir = _train(tmp_path, ["vector", "text"], "base")
    manifest = tmp_path / "val.jsonl"
    before = _embed_all(load_model(base_dir), manifest)

    data["modalities"] = {"vector": {}, "text": {}, "point": {}}
    data["output"]["dir"] = str(tmp_path / "grown")
    data["optim"]["epochs"] = 2
    grown_dir = add_modalities(base_dir, parse_config(data, tmp_path))
    grown = load_model(grown_dir)
    after = _embed_all(grown, manifest)
    for name in ("vector", "text"):
        assert torch.equal(before[name], after[name]), name

    base_w, grown_w = load_file(str(base_dir / "model.safetensors")), load_file(str(grown_dir / "model.safetensors"))
    assert all(torch.equal(base_w[k], grown_w[k]) for k in base_w)
    assert any(k.startswith("encoders.point.") for k in grown_w)
    lineage = json.loads((grown_dir / "config.json").read_text())["lineage"]
    assert lineage[-1]["operation"] == "add" and lineage[-1]["added"] == ["point"]
    assert lineage[-1]["frozen"] == ["text", "vector"]


def test_add_trains_against_the_base_modalities_the_new_data_has(tmp_path, fixture_plugins):
    """Data for a new modality rarely has every base modality (depth maps come without CLIP's photos)."""
    data, base_dir = _train(tmp_path, ["vector", "text"], "base")
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    without_vector = tmp_path / "no-vector.jsonl"
    without_vector.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "vector"}) + "\n" for r in rows))
    data["modalities"] = {"text": {}, "point": {}}
    data["data"] = {"train": str(without_vector), "batch_size": 4}
    del data["dim"]  # the base model's
    data["output"]["dir"] = str(tmp_path / "grown")
    grown = load_model(add_modalities(base_dir, parse_config(data, tmp_path)))
    assert sorted(grown.names) == ["point", "text", "vector"]
    manifest = tmp_path / "val.jsonl"
    assert torch.equal(_embed_all(grown, manifest)["vector"], _embed_all(load_model(base_dir), manifest)["vector"])


def test_add_needs_a_new_modality_and_the_same_dim(tmp_path, fixture_plugins):
    data, base_dir = _train(tmp_path, ["vector", "text"], "base")
    with pytest.raises(ConfigError, match="adds no modality"):
        add_modalities(base_dir, parse_config({**data, "output": {"dir": str(tmp_path / "x")}}, tmp_path))
    data["modalities"]["point"] = {}
    data["dim"] = 16
    with pytest.raises(ConfigError, match="dim"):
        add_modalities(base_dir, parse_config({**data, "output": {"dir": str(tmp_path / "y")}}, tmp_path))
    data["dim"] = 8
    data["modalities"]["text"] = {"lora": {"r": 2}}
    with pytest.raises(ConfigError, match="keeps the base model's modalities frozen: text cannot get LoRA"):
        add_modalities(base_dir, parse_config({**data, "output": {"dir": str(tmp_path / "z")}}, tmp_path))


def test_bridge_joins_two_spaces_and_round_trips(tmp_path, fixture_plugins):
    _, base_dir = _train(tmp_path, ["vector", "text"], "space-a")
    _, leaf_dir = _train(tmp_path, ["point", "text"], "space-b", optim={"seed": 5})
    config = {
        "base": str(base_dir), "leaf": str(leaf_dir), "shared": "text",
        "pools": {"text": "train.jsonl", "vector": "train.jsonl", "point": "val.jsonl"},
        "projector": {"hidden": 16, "depth": 1}, "steps": 20, "batch_size": 16,
        "output": str(tmp_path / "bridged"), "progress": False,
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    bridged_dir = bridge_spaces(load_bridge_config(path))

    bridged = load_model(bridged_dir)
    assert sorted(bridged.names) == ["point", "text", "vector"] and list(bridged.bridges) == ["point"]
    base = load_model(base_dir)
    manifest = tmp_path / "val.jsonl"
    joined, original = _embed_all(bridged, manifest), _embed_all(base, manifest)
    for name in ("vector", "text"):  # the base space is untouched
        assert torch.equal(joined[name], original[name])
    again = _embed_all(load_model(bridged_dir), manifest)  # save -> load -> identical
    assert torch.equal(joined["point"], again["point"])
    assert torch.allclose(joined["point"].norm(dim=-1), torch.ones(len(joined["point"])))
    lineage = json.loads((bridged_dir / "config.json").read_text())["lineage"]
    assert lineage[-1]["operation"] == "bridge" and lineage[-1]["added"] == ["point"]


def test_bridge_config_errors_name_the_problem(tmp_path, fixture_plugins):
    _, base_dir = _train(tmp_path, ["vector", "text"], "space-a")
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({"base": str(base_dir), "leaf": str(base_dir), "pools": {}, "stepz": 3}))
    with pytest.raises(ConfigError, match="unknown key 'stepz'.*did you mean 'steps'"):
        load_bridge_config(path)
    path.write_text(yaml.safe_dump({"base": str(base_dir), "leaf": str(base_dir), "pools": {}}))
    with pytest.raises(ConfigError, match="both spaces have modality 'vector'"):
        bridge_spaces(load_bridge_config(path))


def test_cli_extend_add(tmp_path, fixture_plugins, capsys):
    data, base_dir = _train(tmp_path, ["vector", "text"], "base")
    data["modalities"]["point"] = {}
    data["output"]["dir"] = str(tmp_path / "grown")
    run = tmp_path / "add.yaml"
    run.write_text(yaml.safe_dump(data))
    assert main(["extend", "add", str(base_dir), str(run)]) == 0
    assert "model written to" in capsys.readouterr().out
    assert "point" in load_model(tmp_path / "grown" / "model").names
