"""Tests of the gramx-text plugin: conformance, real MiniLM weights, local models, errors."""

from __future__ import annotations

import time

import pydantic
import pytest
import torch

import gramx
from gramx.testing import ModalityConformance, check_modality, run_in_host
from gramx_text import TEXT, TextConfig, load_text
from gramx_text.encoder import (
    TextEncoder,
    build_text_encoder,
    bundled_model_dir,
    collate_texts,
    get_tokenizer,
    resolve_model,
)
from gramx_text.testing import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT saved with save_pretrained, MiniLM's tokenizer next to it."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def embed(texts: list[str], cfg: TextConfig, encoder: torch.nn.Module | None = None) -> torch.Tensor:
    encoder = (encoder or build_text_encoder(cfg)).eval()
    with torch.no_grad():
        return encoder(TEXT.make_batch([load_text(t, cfg) for t in texts], cfg))


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return build_text_encoder(TextConfig())


class TestTextConformance(ModalityConformance):
    """The conformance kit with the real default model (all-MiniLM-L6-v2)."""

    modality = TEXT
    samples = list(TEXT.samples)
    bad_inputs = ["", "   ", 42, None, b"raw bytes", ["a", "list"]]


def test_conformance_with_local_model_and_cls_pooling(tiny_bert):
    cfg = TextConfig(model=tiny_bert, pooling="cls", max_length=32)
    assert check_modality(TEXT, ["short", "a somewhat longer sentence about cats"], cfg=cfg)


def test_local_model_directory_loads(tiny_bert):
    cfg = TextConfig(model=tiny_bert, max_length=16)
    encoder = build_text_encoder(cfg)
    assert encoder.feature_dim == 32
    out = embed(["hello world", "a b c"], cfg, encoder)
    assert out.shape == (2, 32)


def test_minilm_is_the_default_and_knows_related_sentences(minilm):
    assert resolve_model(TextConfig().model) == str(bundled_model_dir())
    assert minilm.feature_dim == 384
    a, b, c = embed(
        ["A man is playing the guitar.", "Someone strums an acoustic guitar on stage.",
         "The central bank raised interest rates again."],
        TextConfig(), minilm,
    )
    cos = torch.nn.functional.cosine_similarity
    related, unrelated = cos(a, b, dim=0), cos(a, c, dim=0)
    assert related > unrelated + 0.3, (related, unrelated)


def test_minilm_matches_sentence_transformers(minilm):
    """Masked mean pooling, L2-normalised, reproduces the reference all-MiniLM-L6-v2 embeddings.

    The numbers are the first six dimensions that sentence-transformers 6.2.0 gives for these
    texts with the same weights (SentenceTransformer(<bundled dir>).encode(texts)); the two texts
    have different lengths, so the first one is padded in our batch.
    """
    texts = ["A man is playing the guitar.", "Rain falls on a quiet city street at night."]
    reference = torch.tensor([
        [0.0235496, 0.0006998, -0.0062357, -0.0564071, -0.1552017, 0.0003125],
        [0.0695744, -0.0186672, 0.0988250, 0.0992986, 0.0182218, -0.0278928],
    ])
    ours = torch.nn.functional.normalize(embed(texts, TextConfig(), minilm), dim=-1)
    torch.testing.assert_close(ours[:, :6], reference, atol=2e-5, rtol=0)


def test_mean_pooling_ignores_padding(tiny_bert):
    cfg = TextConfig(model=tiny_bert, max_length=32)
    encoder = build_text_encoder(cfg)
    alone = embed(["a cat"], cfg, encoder)
    padded = embed(["a cat", "a much longer sentence that forces padding of the first one"], cfg, encoder)
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)


def test_normalize_gives_unit_vectors(tiny_bert):
    out = embed(["one", "two words"], TextConfig(model=tiny_bert, normalize=True, max_length=16))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def test_collate_truncates_to_max_length():
    cfg = TextConfig(max_length=8)
    batch = collate_texts(["word " * 50, "short"], cfg)
    assert set(batch) >= {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][1].sum() < 8  # the short text is padded, not filled


def test_tokenizer_is_cached_per_model(tiny_bert):
    assert get_tokenizer(TextConfig()) is get_tokenizer(TextConfig(max_length=64))
    assert get_tokenizer(TextConfig(model=tiny_bert)) is not get_tokenizer(TextConfig())


def test_freeze_fixes_the_backbone(tiny_bert):
    cfg = TextConfig(model=tiny_bert, freeze=True, max_length=16)
    encoder = build_text_encoder(cfg).train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.backbone.training  # dropout stays off while the model around it trains
    out = encoder(TEXT.make_batch(["a frozen text"], cfg))
    assert not out.requires_grad

    trainable = build_text_encoder(cfg.model_copy(update={"freeze": False})).train()
    assert all(p.requires_grad for p in trainable.parameters())
    assert trainable.backbone.training


@pytest.mark.parametrize("value", ["", " \n\t ", 3.5, None, b"bytes", {"text": "x"}])
def test_bad_text_values_raise_load_error(value):
    with pytest.raises(gramx.LoadError) as info:
        load_text(value, TextConfig())
    assert repr(value) in str(info.value)
    assert info.value.hint


def test_model_id_missing_from_cache_fails_fast_without_network():
    cfg = TextConfig(model="gramx-tests/no-such-model-anywhere")
    start = time.monotonic()
    with pytest.raises(gramx.ConfigError) as info:
        build_text_encoder(cfg)
    assert time.monotonic() - start < 10
    assert "gramx-tests/no-such-model-anywhere" in str(info.value)
    assert "allow_download" in info.value.hint
    with pytest.raises(gramx.ConfigError):
        collate_texts(["hello"], cfg)


def test_models_load_with_local_files_only_unless_downloads_are_allowed(monkeypatch):
    """Even without HF_HUB_OFFLINE in the environment, nothing is fetched by default."""
    import transformers

    calls = []

    def fake_from_pretrained(source, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        raise OSError("not cached")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    for allow in (False, True):
        cfg = TextConfig(model="gramx-tests/uncached", allow_download=allow)
        with pytest.raises(gramx.ConfigError):
            build_text_encoder(cfg)
        with pytest.raises(gramx.ConfigError):
            collate_texts(["hi"], cfg)
    assert calls == [True, True, False, False]


def test_missing_or_broken_model_directory(tmp_path):
    with pytest.raises(gramx.ConfigError, match="no such directory"):
        build_text_encoder(TextConfig(model=str(tmp_path / "absent")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(gramx.ConfigError, match="empty"):
        build_text_encoder(TextConfig(model=str(tmp_path / "empty")))


def test_max_length_beyond_the_model_is_a_config_error(tiny_bert):
    with pytest.raises(gramx.ConfigError, match="max_length"):
        build_text_encoder(TextConfig(model=tiny_bert, max_length=512))


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(pydantic.ValidationError, match="modle"):
        TextConfig.model_validate({"modle": "x"})
    with pytest.raises(pydantic.ValidationError):
        TextConfig(pooling="max")
    with pytest.raises(pydantic.ValidationError):
        TextConfig(max_length=0)


def test_runs_through_the_host(tmp_path):
    """Discovered through its entry point, trained two steps (bundled MiniLM), saved and loaded."""
    run = run_in_host("text", tmp_path, distribution="gramx-text")
    assert run.status.modalities == ["text"] and run.embeddings.shape == (4, 8)


def test_a_model_folder_in_a_run_file_resolves_against_the_file(tmp_path, tiny_bert, monkeypatch):
    """`model: encoders/bert` in runs/run.yaml is runs/encoders/bert, wherever gramx runs."""
    import shutil

    import yaml

    from gramx.train.config import load_config

    folder = tmp_path / "runs"
    shutil.copytree(tiny_bert, folder / "encoders" / "bert")
    run = {"modalities": {"text": {"options": {"model": "encoders/bert", "max_length": 16}}, "subtitles": {}},
           "data": {"train": "train.jsonl"}}
    (folder / "run.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    options = load_config(folder / "run.yaml").modalities["text"].options
    assert options["model"] == str(folder / "encoders" / "bert")
    assert embed(["one"], TextConfig(**options)).shape == (1, 32)
    typed = load_config(folder / "run.yaml", ["modalities.text.options.model=all-MiniLM-L6-v2"])
    assert typed.modalities["text"].options["model"] == "all-MiniLM-L6-v2"  # a name stays a name


def test_a_cached_hub_model_is_stored_by_reference(tmp_path, tiny_bert, monkeypatch):
    """A model id found in the local Hugging Face cache loads from its snapshot folder, which a frozen backbone references."""
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--gramx-tests--tiny-bert" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_bert, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model("gramx-tests/tiny-bert") == str(snapshot)
    assert resolve_model("gramx-tests/not-cached") == "gramx-tests/not-cached"
    encoder = build_text_encoder(TextConfig(model="gramx-tests/tiny-bert", freeze=True, max_length=16))
    assert encoder.pretrained_weights == {"backbone.": str(snapshot)}
    torch.testing.assert_close(embed(["one two"], TextConfig(model="gramx-tests/tiny-bert", max_length=16), encoder),
                               embed(["one two"], TextConfig(model=tiny_bert, max_length=16)))
