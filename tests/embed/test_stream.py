"""Embedding in batches: the same vectors as embedding a whole manifest, any slice of rows, manifests and shards alike."""

from __future__ import annotations

import json

import pytest
import torch
from fixture_modalities import make_dataset

import gramx
from gramx.data.loading import ErrorLog
from gramx.data.manifest import DataError
from gramx.data.shard_reader import read_shards
from gramx.data.shards import write_shards
from gramx.embed import embed_manifest
from gramx.embed.embedding import Embeddings
from gramx.embed.stream import count_rows, embedded_batches


@pytest.fixture
def model(trained, fixture_plugins):
    return gramx.load_model(trained.model)


def together(batches) -> tuple[Embeddings, list[int]]:
    batches = list(batches)
    parts = [b for b, _ in batches]
    return Embeddings(
        ids=[i for b in parts for i in b.ids], labels=[x for b in parts for x in b.labels],
        lines=[x for b in parts for x in b.lines],
        feats={n: torch.cat([b.feats[n] for b in parts]) for n in parts[0].feats},
        masks={n: torch.cat([b.masks[n] for b in parts]) for n in parts[0].masks},
        values={n: [v for b in parts for v in b.values[n]] for n in parts[0].values},
    ), [end for _, end in batches]


def test_batches_equal_the_whole_manifest_embedded_at_once(model, trained, tmp_path):
    manifest = make_dataset(tmp_path, n=23, missing=True)
    whole = embed_manifest(model, manifest)
    streamed, ends = together(embedded_batches(model, manifest, batch_size=5))
    assert ends == [5, 10, 15, 20, 23] and streamed.ids == whole.ids and streamed.labels == whole.labels
    for name in model.names:
        assert torch.equal(streamed.masks[name], whole.masks[name])
        torch.testing.assert_close(streamed.feats[name], whole.feats[name], rtol=0, atol=1e-6)
    assert streamed.values["vector"][0] == str(tmp_path / "vec" / "train-0.npy")  # resolved, for showing


def test_a_slice_of_rows_is_the_slice_of_the_whole(model, tmp_path):
    manifest = make_dataset(tmp_path, n=23)
    whole, _ = together(embedded_batches(model, manifest, batch_size=4))
    part, ends = together(embedded_batches(model, manifest, first=7, stop=18, batch_size=4))
    assert ends == [11, 15, 18] and part.ids == whole.ids[7:18]
    torch.testing.assert_close(part.feats["text"], whole.feats["text"][7:18], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_shards_embed_as_their_manifest_does(model, tmp_path):
    manifest = make_dataset(tmp_path, n=13)
    write_shards(manifest, tmp_path / "shards", shard_size=4, progress=False)
    shards = read_shards(tmp_path / "shards")
    assert count_rows(shards) == count_rows(manifest) == 13
    from_manifest, _ = together(embedded_batches(model, manifest, batch_size=5))
    from_shards, ends = together(embedded_batches(model, shards, batch_size=5, workers=1))
    assert ends == [5, 10, 13] and from_shards.ids == from_manifest.ids
    for name in model.names:
        torch.testing.assert_close(from_shards.feats[name], from_manifest.feats[name], rtol=0, atol=1e-6)
    assert from_shards.values["vector"][0] == "000000.tar:000000000.vector.npy"


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_bad_row_stops_naming_its_line_or_is_skipped_and_counted(model, tmp_path, workers):
    manifest = make_dataset(tmp_path, n=9)
    lines = manifest.read_text().splitlines()
    row = json.loads(lines[4])
    row["vector"] = "vec/missing.npy"
    lines[4] = json.dumps(row)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl line 5 \(vector\)"):
        list(embedded_batches(model, manifest, batch_size=3, workers=workers))
    errors = ErrorLog()
    kept, ends = together(embedded_batches(model, manifest, batch_size=3, workers=workers, on_error="skip",
                                           error_log=errors))
    assert ends == [3, 6, 9] and len(kept.ids) == 8 and "r4" not in kept.ids and errors.count == 1
