"""LoRA through peft: on the towers of imported spaces and on the HF encoders the plugins accept."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from gramx.train.config import parse_config
from gramx.errors import ConfigError
from gramx.model.model import load_model
from gramx.train.config import build_model
from gramx.train.loop import train
from gramx_hf import tower_options
from gramx.embed import embed_values

#: architecture -> (the tower that gets adapters, the one left frozen)
TUNED = {"CLIPModel": ("text", "image"), "SiglipModel": ("image", "text"), "ClapModel": ("audio", "text")}


def _run(tmp_path, modalities: dict, manifest, dim: int, **sections):
    data = {"modalities": modalities, "dim": dim, "loss": {"type": "pairwise", "anchor": "text"},
            "data": {"train": str(manifest), "batch_size": 2},
            "optim": {"max_steps": 3, "lr": 0.05, "warmup_steps": 0}, "output": {"dir": str(tmp_path / "run")},
            "logging": {"progress": False, "tensorboard": False}, **sections}
    return parse_config(data, tmp_path)


def _equal_states(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("architecture", sorted(TUNED))
def test_lora_tunes_one_tower_of_an_imported_space(architecture, checkpoints, imported, media, tmp_path):
    tuned, frozen = TUNED[architecture]
    entries = tower_options(checkpoints[architecture])
    entries[tuned]["lora"] = {"r": 2, "alpha": 4}
    start = load_model(imported[architecture])
    run = _run(tmp_path, entries, media["manifest"], start.dim)
    model = build_model(run)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(f"encoders.{tuned}." in n and ".lora_" in n for n in trainable)

    model_dir = train(run)
    stored = load_file(str(model_dir / "model.safetensors"))
    adapters = {k: v for k, v in stored.items() if ".lora_" in k}
    assert sorted(adapters) == sorted(trainable)
    extra = sum(v.numel() * v.element_size() for k, v in stored.items() if k not in adapters)  # buffers
    assert extra < 8_000
    assert (model_dir / "model.safetensors").stat().st_size <= sum(
        v.numel() * v.element_size() for v in stored.values()) + 16_000

    trained = load_model(model_dir)
    values = {"text": media["texts"], "image": media["images"], "audio": media["sounds"]}
    with torch.no_grad():
        assert torch.equal(embed_values(trained, frozen, values[frozen]), embed_values(start, frozen, values[frozen]))
        moved = (embed_values(trained, tuned, values[tuned]) - embed_values(start, tuned, values[tuned])).abs().max()
    assert moved > 1e-4  # the adapters learned something
    assert _equal_states(trained, load_model(trained.save_pretrained(tmp_path / "again")))


def _tiny_vit(path) -> str:
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(path)
    return str(path)


def _tiny_wav2vec2(path) -> str:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(path)
    return str(path)


def test_lora_on_the_hf_encoders_the_plugins_accept(tmp_path):
    from gramx_text.testing import save_tiny_bert

    vit = _tiny_vit(tmp_path / "vit")
    modalities = {
        "text": {"options": {"model": save_tiny_bert(tmp_path / "bert"), "max_length": 16, "freeze": True}},
        "image": {"options": {"encoder": "hf", "model_path": vit, "size": 32}},
        "video": {"options": {"encoder": "hf", "model_path": vit, "size": 32, "num_frames": 2}},
        "audio": {"options": {"encoder": "hf", "model_path": _tiny_wav2vec2(tmp_path / "w2v"),
                              "features": "waveform"}},
    }
    for entry in modalities.values():
        entry["lora"] = {"r": 2}
    model = build_model(_run(tmp_path, modalities, tmp_path / "unused.jsonl", 8))
    for name in modalities:
        encoder = dict(model.encoders[name].named_parameters())
        tuned = sorted(n for n, p in encoder.items() if p.requires_grad)
        assert tuned and all(".lora_" in n for n in tuned), name
        assert not any(p.requires_grad for n, p in encoder.items() if ".lora_" not in n), name
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.add_(0.01)  # as if trained: the adapters are no longer zero
    model_dir = model.save_pretrained(tmp_path / "model")
    stored = load_file(str(model_dir / "model.safetensors"))
    assert any(".lora_A." in k for k in stored) and not any(k.endswith("base_layer.weight") for k in stored)
    assert _equal_states(model, load_model(model_dir))


def test_lora_errors_say_what_to_do(tmp_path):
    cnn = {"image": {"options": {"size": 32}, "lora": {}}, "text": {"options": {"freeze": True}}}
    with pytest.raises(ConfigError, match="LoRA adapts pretrained weights, and its encoder has none"):
        build_model(_run(tmp_path, cnn, tmp_path / "unused.jsonl", 8))
    wrong = {"image": {"options": {"size": 32}}, "text": {"options": {"freeze": True}, "lora": {"target_modules": ["qq"]}}}
    with pytest.raises(ConfigError, match=r"no layer of its pretrained weights matches lora.target_modules \['qq'\]") as err:
        build_model(_run(tmp_path, wrong, tmp_path / "unused.jsonl", 8))
    assert "query" in err.value.hint and "value" in err.value.hint
