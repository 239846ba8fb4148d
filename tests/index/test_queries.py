"""Many queries from a file: read, embedded in blocks, each answered as one search would answer it."""

from __future__ import annotations

import json

import pytest

import gramx
from gramx.cli import main
from gramx.errors import GramxError
from gramx.index import EmbeddingIndex
from gramx.index import queries as batch
from gramx.index.queries import answer_queries, read_queries


@pytest.fixture
def made(trained, fixture_plugins):
    return gramx.load_model(trained.model), EmbeddingIndex.load(trained.index)


def test_query_files_are_text_lines_or_manifest_rows(tmp_path):
    (tmp_path / "q.txt").write_text("the digit one\n\n  the digit two \n")
    assert list(read_queries(tmp_path / "q.txt", "text")) == [("q:1", "the digit one"), ("q:3", "the digit two")]
    (tmp_path / "q.jsonl").write_text('{"id": "a", "text": "one"}\n{"text": "two"}\n')
    assert list(read_queries(tmp_path / "q.jsonl", "text")) == [("a", "one"), ("q:2", "two")]
    with pytest.raises(GramxError, match="q.jsonl line 1: no vector value"):
        list(read_queries(tmp_path / "q.jsonl", "vector"))


def test_blocks_of_queries_answer_as_single_searches(made, monkeypatch):
    model, index = made
    monkeypatch.setattr(batch, "QUERY_BLOCK", 2)
    texts = ["the digit one", "the digit two", "the digit three"]
    answers = list(answer_queries(model, index, iter(enumerate(texts)), "text", None, k=4))
    assert [(qid, value) for qid, value, _, _ in answers] == list(enumerate(texts))
    for (_, text, score, hits) in answers:
        alone, alone_hits = index.query(model, text, "text", k=4)
        assert score == alone and [h.id for h in hits] == [h.id for h in alone_hits]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone_hits], abs=1e-6)


def test_search_with_a_query_file_writes_json_lines(made, trained, tmp_path, capsys):
    (tmp_path / "q.txt").write_text("the digit one\nthe digit two\n")
    out = tmp_path / "results.jsonl"
    assert main(["search", str(trained.model), "--index", str(trained.index), "--query-file",
                 str(tmp_path / "q.txt"), "--modality", "vector", "-k", "3", "-o", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["query"], r["score"], len(r["hits"])) for r in lines] == [
        ("q:1", "the digit one", "cosine", 3), ("q:2", "the digit two", "cosine", 3)]
    assert lines[0]["hits"][0]["rank"] == 1 and "vector" in lines[0]["hits"][0]["values"]
