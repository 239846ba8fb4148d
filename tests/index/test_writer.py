"""Writing an index: batches committed, a killed writer resumed exactly, rows appended, parts of processes joined."""

from __future__ import annotations

import pytest
import torch
from fixture_modalities import make_dataset

import gramx
from gramx.embed.stream import embedded_batches
from gramx.errors import GramxError
from gramx.files.atomic import OutputExists
from gramx.index import EmbeddingIndex, IndexWriter
from gramx.index.writer import finish_parts, work_folder


@pytest.fixture
def model(trained, fixture_plugins):
    return gramx.load_model(trained.model)


def write(model, manifest, out, batch_size=4, **options) -> EmbeddingIndex:
    with IndexWriter(out, model, **options) as writer:
        first = writer.next_row
        for batch, next_row in embedded_batches(model, manifest, first, options.get("stop"), batch_size):
            writer.add(batch, next_row)
    return EmbeddingIndex.load(out)


def contents(index: EmbeddingIndex) -> tuple[list, dict]:
    described = index.describe(range(len(index)))
    ids = [described[p][0] for p in range(len(index))]
    vectors = {n: torch.cat([s.read(n, 0, s.rows)[0] for s in index.segments]) for n in index.modalities}
    return ids, vectors


def same(a: EmbeddingIndex, b: EmbeddingIndex, atol: float = 1e-6) -> None:
    (ids_a, va), (ids_b, vb) = contents(a), contents(b)
    assert ids_a == ids_b
    for name in va:
        torch.testing.assert_close(va[name], vb[name], rtol=0, atol=atol)


def test_an_index_holds_every_row_in_order(model, tmp_path):
    manifest = make_dataset(tmp_path, n=11, missing=True)
    index = write(model, manifest, tmp_path / "index")
    assert len(index) == 11 and index.modalities == model.names and index.record.dtype == "float32"
    assert index.rows_with("point") < 11 and not work_folder(tmp_path / "index").exists()
    embedded = gramx.embed.embed_manifest(model, manifest)
    ids, vectors = contents(index)
    assert ids == embedded.ids
    torch.testing.assert_close(vectors["text"], embedded.feats["text"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype, atol", [("float16", 1e-3), ("bfloat16", 1e-2)])
def test_half_precision_storage(model, tmp_path, dtype, atol):
    manifest = make_dataset(tmp_path, n=7)
    same(write(model, manifest, tmp_path / dtype, dtype=dtype), write(model, manifest, tmp_path / "full"), atol)


def test_a_killed_writer_resumes_where_it_stopped(model, tmp_path):
    manifest = make_dataset(tmp_path, n=13)
    out = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt), IndexWriter(out, model) as writer:
        for batch, next_row in embedded_batches(model, manifest, batch_size=4):
            writer.add(batch, next_row)
            if next_row == 8:
                raise KeyboardInterrupt  # killed after two committed batches
    assert not out.exists() and work_folder(out).is_dir()
    with pytest.raises(OutputExists, match="unfinished") as refused:
        IndexWriter(out, model)
    assert "--resume" in refused.value.hint
    with IndexWriter(out, model, resume=True) as writer:
        assert writer.next_row == 8 and writer.rows == 8
        for batch, next_row in embedded_batches(model, manifest, writer.next_row, batch_size=4):
            writer.add(batch, next_row)
    same(EmbeddingIndex.load(out), write(model, manifest, tmp_path / "uninterrupted"))


def test_vector_bytes_past_the_last_commit_are_cut_on_resuming(model, tmp_path):
    manifest = make_dataset(tmp_path, n=9)
    out = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt), IndexWriter(out, model) as writer:
        for batch, next_row in embedded_batches(model, manifest, batch_size=4):
            writer.add(batch, next_row)
            raise KeyboardInterrupt
    segment = work_folder(out) / "part-000000"
    with (segment / "text.vec").open("ab") as f:
        f.write(b"\0" * 100)  # a batch written but never committed
    with IndexWriter(out, model, resume=True) as writer:
        for batch, next_row in embedded_batches(model, manifest, writer.next_row, batch_size=4):
            writer.add(batch, next_row)
    same(EmbeddingIndex.load(out), write(model, manifest, tmp_path / "uninterrupted"))


def test_rows_are_appended_by_the_model_that_made_the_index(model, trained, tmp_path, fixture_plugins):
    first, second = make_dataset(tmp_path, n=5, name="a.jsonl"), make_dataset(tmp_path, n=6, seed=3, name="b.jsonl")
    out = tmp_path / "index"
    write(model, first, out)
    index = write(model, second, out, append=True)
    assert len(index) == 11 and [s.rows for s in index.segments] == [5, 6]
    assert index.find("r5")[0] == 10 and index.find("r0")[0] == 0  # ids repeat across manifests: the first wins
    other = gramx.load_model(trained.other)
    with pytest.raises(GramxError, match="not by"):
        IndexWriter(out, other, append=True)
    with pytest.raises(GramxError, match="as float32") as refused:
        IndexWriter(out, model, append=True, dtype="float16")
    assert "--dtype float32" in refused.value.hint


def test_parts_written_apart_equal_one_writer(model, tmp_path):
    manifest = make_dataset(tmp_path, n=10)
    out = tmp_path / "index"
    for part, (first, stop) in enumerate([(0, 5), (5, 10)]):
        with IndexWriter(out, model, part=part, parts=2, first=first, stop=stop) as writer:
            for batch, next_row in embedded_batches(model, manifest, first, stop, 3):
                writer.add(batch, next_row)
    assert not out.exists()
    finish_parts(out, model, 2)
    index = EmbeddingIndex.load(out)
    assert [s.rows for s in index.segments] == [5, 5]
    same(index, write(model, manifest, tmp_path / "one"))


def test_an_unsaved_model_cannot_make_an_index(model, tmp_path, fixture_plugins):
    model.source = None
    with pytest.raises(GramxError, match="never saved"):
        IndexWriter(tmp_path / "index", model)
