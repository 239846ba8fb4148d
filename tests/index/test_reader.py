"""Searching an index: the same top-k as scoring every row at once, chunk by chunk, segment by segment, part by part."""

from __future__ import annotations

import os

import pytest
import torch
from fixture_modalities import make_dataset

import gramx
from gramx.embed import embed_manifest, embed_values
from gramx.errors import GramxError
from gramx.index import EmbeddingIndex, IndexWriter
from gramx.index import reader
from gramx.embed.stream import embedded_batches
from gramx.scores.similarity import SCORES
from gramx.scores.topk import merge_topk


@pytest.fixture
def model(trained, fixture_plugins):
    return gramx.load_model(trained.model)


@pytest.fixture
def made(model, tmp_path, monkeypatch):
    """An index of two segments (7 + 10 rows, some without a point), read in chunks of 3 rows."""
    monkeypatch.setattr(reader, "CHUNK_ROWS", 3)
    first, second = make_dataset(tmp_path, n=7, missing=True, name="a.jsonl"), \
        make_dataset(tmp_path, n=10, seed=2, missing=True, name="b.jsonl")
    for manifest, append in ((first, False), (second, True)):
        with IndexWriter(tmp_path / "index", model, append=append) as writer:
            for batch, next_row in embedded_batches(model, manifest, batch_size=4):
                writer.add(batch, next_row)
    both = [embed_manifest(model, m) for m in (first, second)]
    feats = {n: torch.cat([e.feats[n] for e in both]) for n in model.names}
    masks = {n: torch.cat([e.masks[n] for e in both]) for n in model.names}
    return EmbeddingIndex.load(tmp_path / "index"), feats, masks, [i for e in both for i in e.ids]


def brute_force(queries, feats, masks, names, score, k):
    """Every row scored at once, the rows lacking a modality left out."""
    keep = torch.stack([masks[n] for n in names]).all(dim=0).nonzero().squeeze(1)
    tuples = torch.stack([feats[n][keep] for n in names], dim=1)
    values, idx = SCORES[score].index(tuples).search(queries, k=k)
    return values, keep[idx]


@pytest.mark.parametrize("names, score", [(["vector"], "cosine"), (["point", "vector"], "volume"),
                                          (["point"], "cosine")])
def test_search_equals_scoring_every_row_at_once(made, model, names, score):
    index, feats, masks, _ = made
    queries = embed_values(model, "text", ["the digit one", "the digit two", "the digit three"])
    got_score, values, positions = index.top(queries, names, k=5)
    want_values, want_positions = brute_force(queries, feats, masks, names, score, 5)
    assert got_score == score
    assert torch.equal(positions, want_positions)
    torch.testing.assert_close(values, want_values, rtol=0, atol=1e-6)


def test_parts_of_the_chunks_merge_into_the_whole(made, model):
    index, *_ = made
    queries = embed_values(model, "text", ["the digit one", "the digit four"])
    _, values, positions = index.top(queries, ["point", "vector"], k=4)
    parts = [index.top(queries, ["point", "vector"], k=4, part=p, parts=3)[1:] for p in range(3)]
    merged = merge_topk(parts, 4, largest=False)
    assert torch.equal(merged[1], positions) and torch.equal(merged[0], values)


def test_hits_name_their_rows_and_show_the_candidates_values(made, model):
    index, _, _, ids = made
    score, hits = index.search(embed_values(model, "text", ["the digit one"]), ["vector"], k=17)
    assert score == "cosine" and len(hits[0]) == 17 and [h.rank for h in hits[0]] == list(range(1, 18))
    assert sorted(h.id for h in hits[0]) == sorted(ids) and all(set(h.values) == {"vector"} for h in hits[0])
    position, shown = index.find(hits[0][0].id)
    assert shown["vector"] == hits[0][0].values["vector"]


def test_one_query_through_the_model_that_made_the_index(made, model, trained):
    index, *_ = made
    score, hits = index.query(model, "the digit two", "text", k=3)
    assert score == model.score and len(hits) == 3 and all(set(h.values) <= {"point", "vector"} for h in hits)
    with pytest.raises(GramxError, match="their weights differ"):
        index.query(gramx.load_model(trained.other), "the digit two", "text")
    with pytest.raises(GramxError, match="no modality smell"):
        index.query(model, "the digit two", "text", ["smell"])


def test_opening_reads_no_vectors(made, monkeypatch):
    index, *_ = made
    reads = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda *a: reads.append(a) or real(*a))
    opened = EmbeddingIndex.load(index.folder)
    assert not reads and len(opened) == 17 and opened.score == "volume"
    opened.top(torch.randn(2, opened.record.model.dim), ["text"], k=3)
    assert reads
