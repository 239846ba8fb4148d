"""Model: embeddings, save_pretrained -> load_model round trip, errors on load."""

from __future__ import annotations

import json

import pytest
import torch
from fixture_modalities import run_config
from safetensors.torch import load_file, save_file

import gramx
from gramx.train.config import parse_config
from gramx.errors import ConfigError, GramxError, PluginError
from gramx.model.model import GramxModel
from gramx.train.config import build_model
from gramx.embed import embed_manifest, embed_values


@pytest.fixture
def model(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["modalities"]["point"] = {"head": {"hidden": 12, "dropout": 0.1}}
    torch.manual_seed(0)
    return build_model(parse_config(data, tmp_path)).eval()


def test_embeddings_are_normalised_with_zero_rows_when_absent(tmp_path, model):
    emb = embed_manifest(model, tmp_path / "train.jsonl", batch_size=5)
    assert len(emb) == 24 and emb.ids[0] == "r0"
    for name in ("vector", "point", "text"):
        x, m = emb.feats[name], emb.masks[name]
        assert x.shape == (24, 8)
        assert torch.allclose(x[m].norm(dim=1), torch.ones(int(m.sum())), atol=1e-5)
        assert torch.all(x[~m] == 0)
    assert not emb.masks["point"].all() and not emb.masks["text"].all()
    texts = embed_values(model, "text", ["the digit one", "the digit two"])
    assert texts.shape == (2, 8)


def test_save_load_gives_identical_embeddings(tmp_path, model):
    before = embed_manifest(model, tmp_path / "train.jsonl")
    path = model.save_pretrained(tmp_path / "model", training={"train_manifest": "x"}, metrics={"tuples": 3})
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no temp folder left
    config = json.loads((path / "config.json").read_text())
    assert config["dim"] == 8 and config["modalities"]["point"]["head"]["hidden"] == 12
    assert config["modalities"]["vector"]["plugin"]["name"] == "fixture"
    assert config["modalities"]["vector"]["config"] == {"dim": 8, "hidden": 16, "freeze": False, "delay": 0.0, "noise": 0.0}
    assert config["modalities"]["vector"]["feature_dim"] == 16
    card = (path / "README.md").read_text()
    assert "| point | fixture | - | 16 | MLP 12 -> 8 |" in card
    loaded = gramx.load_model(path)
    assert isinstance(loaded, gramx.GramxModel) and not loaded.training
    after = embed_manifest(loaded, tmp_path / "train.jsonl")
    for name in before.feats:
        assert torch.equal(before.feats[name], after.feats[name])
    # saving again replaces the folder atomically
    model.save_pretrained(path)
    assert json.loads((path / "config.json").read_text())["training"] == {"train_manifest": "x"}


def test_missing_plugin_names_the_distribution(tmp_path, model):
    path = model.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    spec = config["modalities"].pop("point")
    spec["plugin"] = {"name": "smell", "distribution": "gramx-smell", "version": "1.2.0"}
    config["modalities"]["smell"] = spec
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PluginError) as exc:
        gramx.load_model(path)
    assert "'smell'" in str(exc.value) and "gramx-smell" in str(exc.value)
    assert exc.value.hint.startswith("pip install 'gramx-smell==1.2.0'")


def test_load_is_strict(tmp_path, model):
    path = model.save_pretrained(tmp_path / "model")
    state = load_file(str(path / "model.safetensors"))
    state["heads.vector.extra"] = torch.zeros(1)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(GramxError, match="unexpected"):
        gramx.load_model(path)


def test_load_rejects_unknown_config_keys(tmp_path, model):
    path = model.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["colour"] = "blue"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GramxError, match="unknown key 'colour'"):
        gramx.load_model(path)
    with pytest.raises(GramxError, match="not a gramx model directory"):
        gramx.load_model(tmp_path)


def test_building_a_model_leaves_the_callers_config_alone(tmp_path, model):
    from gramx.model.schema import ModelConfig

    config = ModelConfig.model_validate(model.config.model_dump())
    for spec in config.modalities.values():
        spec.feature_dim = None
    before = config.model_dump()
    built = GramxModel(config)
    assert config.model_dump() == before  # feature sizes are filled into the model's own copy
    assert built.config.modalities["vector"].feature_dim == 16 and built.config is not config


def test_frozen_encoders_stay_in_eval_mode(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["modalities"]["vector"] = {"options": {"freeze": True}}
    model = build_model(parse_config(data, tmp_path)).train()
    assert model.frozen("vector") and not model.encoders["vector"].training
    assert not model.frozen("point") and model.encoders["point"].training


def test_embed_error_on_unknown_modality(tmp_path, model):
    with pytest.raises(GramxError, match="no modality 'smell'"):
        embed_values(model, "smell", ["x"])


def test_embed_manifest_raise_and_skip(tmp_path, model):
    from gramx.data.loading import ErrorLog
    from gramx.data.manifest import DataError

    (tmp_path / "vec" / "train-4.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"train.jsonl line 5 \(vector\)"):
        embed_manifest(model, tmp_path / "train.jsonl")
    log = ErrorLog()
    emb = embed_manifest(model, tmp_path / "train.jsonl", on_error="skip", error_log=log)
    assert len(emb) == 23 and "r4" not in emb.ids and log.count == 1


class SonarPlugin:
    """A plugin that is installed when the model is saved and missing when it is loaded."""

    @gramx.hookimpl
    def gramx_register_modalities(self, register):
        from fixture_modalities import VectorConfig, VectorEncoder, load_vector

        register(gramx.Modality(name="sonar", load=load_vector, build_encoder=VectorEncoder, config=VectorConfig))


def test_loading_only_some_modalities_needs_only_their_plugins(tmp_path, fixture_plugins, capsys):
    import fixture_modalities

    from gramx.cli import main

    fixture_plugins.register_plugin(SonarPlugin(), name="sonar")
    data = run_config(tmp_path)
    data["modalities"]["sonar"] = {}
    torch.manual_seed(0)
    path = build_model(parse_config(data, tmp_path)).save_pretrained(tmp_path / "model")
    full = embed_manifest(gramx.load_model(path), tmp_path / "val.jsonl")
    assert main(["embed", str(path), str(tmp_path / "val.jsonl"), "-o", str(tmp_path / "index")]) == 0

    fixture_plugins.reset()  # the sonar plugin is gone
    fixture_plugins.register_plugin(fixture_modalities, name="fixture")
    with pytest.raises(PluginError, match="sonar"):
        gramx.load_model(path)
    some = gramx.load_model(path, modalities=["text", "vector"])
    assert set(some.encoders) == set(some.heads) == {"text", "vector"}
    part = embed_manifest(some, tmp_path / "val.jsonl")
    for name in ("text", "vector"):
        assert torch.equal(part.feats[name], full.feats[name])
    with pytest.raises(GramxError, match="no modality 'audio'") as exc:
        gramx.load_model(path, modalities=["text", "audio"])
    assert "sonar" in exc.value.hint
    # the CLI: search loads the query's tower only; eval and export take --modalities
    capsys.readouterr()
    assert main(["search", str(path), "--index", str(tmp_path / "index"), "--query", "the digit two",
                 "--modality", "vector", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"]
    assert main(["eval", str(path), str(tmp_path / "val.jsonl"), "--modalities", "text,vector", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["retrieval"]) == {"text->vector", "vector->text"}
    assert main(["export", str(path), "-o", str(tmp_path / "smaller"), "--modalities", "vector,text"]) == 0
    assert set(json.loads((tmp_path / "smaller" / "config.json").read_text())["modalities"]) == {"vector", "text"}
    smaller = embed_manifest(gramx.load_model(tmp_path / "smaller"), tmp_path / "val.jsonl")
    assert torch.equal(smaller.feats["vector"], full.feats["vector"])


def test_a_batch_norm_head_cannot_collapse_and_keeps_its_statistics(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["modalities"]["vector"]["head"] = {"batch_norm": True}
    torch.manual_seed(0)
    model = build_model(parse_config(data, tmp_path)).train()
    shifted = 5 + torch.randn(6, 16)
    standardised = model.heads["vector"](shifted)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardised.std(0, unbiased=False), torch.ones(8), atol=1e-2, rtol=0)
    model.eval()
    before = embed_manifest(model, tmp_path / "train.jsonl")
    path = model.save_pretrained(tmp_path / "model")
    assert "| linear, batch norm -> 8 |" in (path / "README.md").read_text()
    after = embed_manifest(gramx.load_model(path), tmp_path / "train.jsonl")
    assert torch.equal(before.feats["vector"], after.feats["vector"])  # the running statistics are saved
    with pytest.raises(ConfigError, match="identity head has no layers"):
        parse_config({**data, "modalities": {**data["modalities"], "vector": {"head": {"identity": True,
                                                                                    "batch_norm": True}}}}, tmp_path)
