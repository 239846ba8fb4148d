"""`gramx import`: a CLIP, SigLIP or CLAP folder becomes a gramx model that embeds exactly as the checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from gramx.cli import main
from gramx.errors import ConfigError, GramxError
from gramx.model.model import load_model
from gramx.model.pretrained import folder_digest
from gramx_hf import import_space
from gramx_hf.towers import ARCHITECTURES as TWO_TOWERS
from gramx_hf.testing import TINY_MODELS
from gramx_hf.towers import load_pretrained
from gramx.embed import embed_values

TOLERANCE = 1e-5
ARCHITECTURES = sorted(TINY_MODELS)


def reference(folder, modality: str, values, max_length: int) -> torch.Tensor:
    """What transformers' own feature function gives for ``values``, L2-normalised."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    model = load_pretrained(folder).eval()
    if modality == "text":
        padding = "max_length" if TWO_TOWERS[model.__class__.__name__].padding == "max_length" else True
        inputs = AutoTokenizer.from_pretrained(folder)(values, padding=padding, max_length=max_length,
                                                       truncation=True, return_tensors="pt")
    elif modality == "image":
        inputs = AutoImageProcessor.from_pretrained(folder)(images=[Image.open(v).convert("RGB") for v in values],
                                                           return_tensors="pt")
    else:
        inputs = AutoFeatureExtractor.from_pretrained(folder)([sf.read(v, dtype="float32")[0] for v in values],
                                                             sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = getattr(model, f"get_{modality}_features")(**inputs)
    return F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_embeddings_equal_the_checkpoints_feature_functions(architecture, checkpoints, imported, media):
    folder, model = checkpoints[architecture], load_model(imported[architecture])
    towers = TWO_TOWERS[architecture].modalities
    assert model.names == sorted(towers) and model.dim == model.config.modalities["text"].feature_dim
    values = {"text": media["texts"], "image": media["images"], "audio": media["sounds"]}
    for name in towers:
        with torch.no_grad():
            ours = embed_values(model, name, values[name])
        theirs = reference(folder, name, values[name], model.modality_configs["text"].max_length)
        assert ours.shape == theirs.shape == (4, model.dim)
        assert (ours - theirs).abs().max().item() <= TOLERANCE, name


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_model_directory_references_the_checkpoint_and_reloads_equal(architecture, checkpoints, imported,
                                                                         tmp_path):
    model_dir = imported[architecture]
    stored = load_file(str(model_dir / "model.safetensors"))
    assert not any(value.numel() > 1000 for value in stored.values())  # buffers at most, no tower weights
    assert (model_dir / "model.safetensors").stat().st_size < 16_000
    config = json.loads((model_dir / "config.json").read_text())
    assert config["lineage"] == [{"operation": "import", "source": checkpoints[architecture],
                                  "architecture": architecture}]
    for spec in config["modalities"].values():
        assert spec["head"]["identity"] and spec["config"]["freeze"]
        assert [(r["path"], r["sha256"]) for r in spec["pretrained"]] == [
            (checkpoints[architecture], folder_digest(checkpoints[architecture]))]

    model = load_model(model_dir)
    again = load_model(model.save_pretrained(tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["modalities"] == config["modalities"]
    state, state_again = model.state_dict(), again.state_dict()
    assert state.keys() == state_again.keys() and all(torch.equal(state[k], state_again[k]) for k in state)


def test_a_shared_copy_loads_without_the_checkpoint_folder(checkpoints, media, tmp_path):
    folder = shutil.copytree(checkpoints["CLIPModel"], tmp_path / "clip")
    model_dir = import_space(folder, tmp_path / "model")
    shared = import_space(folder, tmp_path / "shared", self_contained=True)
    before = embed_values(load_model(model_dir), "image", media["images"])
    shutil.rmtree(folder)
    assert torch.equal(embed_values(load_model(shared), "image", media["images"]), before)
    with pytest.raises(GramxError, match="which is missing"):
        load_model(model_dir)


def test_other_architectures_are_refused_naming_the_supported_ones(tmp_path):
    from gramx_text.testing import save_tiny_bert

    with pytest.raises(ConfigError, match="holds a BertModel; gramx supports the two-tower models CLIPModel, "
                                          "SiglipModel, ClapModel"):
        import_space(save_tiny_bert(tmp_path / "bert"), tmp_path / "model")
    assert not (tmp_path / "model").exists()
    with pytest.raises(ConfigError, match="no such folder"):
        import_space(tmp_path / "nowhere", tmp_path / "model")


def test_import_then_eval_embed_and_search_from_the_command_line(checkpoints, media, tmp_path, capsys):
    model_dir = tmp_path / "clip"
    assert main(["import", checkpoints["CLIPModel"], "-o", str(model_dir)]) == 0
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    assert main(["import", checkpoints["CLIPModel"], "-o", str(tmp_path / "stranger")]) == 1
    assert "does not replace it" in capsys.readouterr().err

    manifest = tmp_path / "images.jsonl"
    rows = [json.loads(line) for line in media["manifest"].read_text().splitlines()]
    manifest.write_text("".join(json.dumps({"label": r["label"], "image": str(media["root"] / r["image"]),
                                            "text": r["text"]}) + "\n" for r in rows))
    assert main(["eval", str(model_dir), str(manifest), "--classes", str(media["classes"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    prompts = reference(checkpoints["CLIPModel"], "text", media["texts"], 32)
    images = reference(checkpoints["CLIPModel"], "image", media["images"], 32)
    expected = 100.0 * ((images @ prompts.T).argmax(dim=1) == torch.arange(4)).double().mean().item()
    assert report["zeroshot"]["image"] == pytest.approx(expected)

    index = tmp_path / "index"
    assert main(["embed", str(model_dir), str(manifest), "-o", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", str(model_dir), "--index", str(index), "--query", media["texts"][1], "--modality",
                 "text", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["values"]["text"] == media["texts"][1]
