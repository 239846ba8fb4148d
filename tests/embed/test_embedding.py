"""Embedding manifests and raw values: each distinct value once, rows where they were, failures named."""

from __future__ import annotations

import json

import pytest
import torch
from fixture_modalities import make_dataset

import gramx
from gramx.data.loading import ErrorLog
from gramx.data.manifest import DataError, read_manifest
from gramx.embed.embedding import embed_manifest, embed_values, encode_unique, evaluating


@pytest.fixture
def model(trained, fixture_plugins):
    return gramx.load_model(trained.model)


def test_values_embed_each_distinct_value_once_into_unit_vectors(model):
    texts = ["the digit two", "the digit one", "the digit two"]
    vectors = embed_values(model, "text", texts)
    assert vectors.shape == (3, model.dim) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    assert torch.equal(vectors[0], vectors[2]) and not torch.equal(vectors[0], vectors[1])
    torch.testing.assert_close(embed_values(model, "text", texts, batch_size=1), vectors)
    assert embed_values(model, "text", []).shape == (0, model.dim)


def test_a_value_that_fails_is_named(model, tmp_path):
    with pytest.raises(DataError, match="missing.npy") as info:
        embed_values(model, "vector", [str(tmp_path / "missing.npy")])
    assert "vector" in info.value.hint


def test_encode_unique_encodes_a_repeated_value_once(model):
    encoded = []

    def encode(batch):
        encoded.append(model.embed("text", batch))
        return encoded[-1]

    index, table, failed = encode_unique(["a", "b", "a", "a"], model.modalities["text"],
                                         model.modality_configs["text"], encode, batch_size=1)
    assert set(index) == {"a", "b"} and table.shape == (2, model.dim) and failed == {} and sum(map(len, encoded)) == 2


def test_a_manifest_embeds_every_row_as_its_values_do(model, tmp_path):
    manifest = make_dataset(tmp_path, n=10, missing=True)
    emb = embed_manifest(model, manifest)
    rows = read_manifest(manifest).rows
    assert emb.ids == [r.id for r in rows] and emb.lines == list(range(1, 11)) and emb.labels == [r.label for r in rows]
    for name in ("vector", "point", "text"):
        has = [name in r.values for r in rows]
        assert emb.masks[name].tolist() == has and not emb.feats[name][~emb.masks[name]].any()
    texts = [r.values["text"] for r in rows if "text" in r.values]
    torch.testing.assert_close(emb.feats["text"][emb.masks["text"]], embed_values(model, "text", texts))
    only = embed_manifest(model, manifest, modalities=["text"])
    assert set(only.feats) == {"text"} and torch.equal(only.feats["text"], emb.feats["text"])


def test_a_bad_row_raises_naming_its_line_or_is_left_out_and_logged(model, tmp_path):
    manifest = make_dataset(tmp_path, n=6)
    lines = manifest.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "vector": "vec/missing.npy"})
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl line 3 \(vector\)"):
        embed_manifest(model, manifest)
    log = ErrorLog()
    kept = embed_manifest(model, manifest, on_error="skip", error_log=log)
    assert kept.ids == ["r0", "r1", "r3", "r4", "r5"] and log.count == 1 and len(kept.feats["text"]) == 5


def test_embedding_leaves_the_models_mode_as_it_was(model):
    model.train()
    with evaluating(model):
        assert not model.training
    assert model.training
    embed_values(model, "text", ["the digit one"])
    assert model.training
