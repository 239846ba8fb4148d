"""One index segment: batches read back as written, a killed writer's torn bytes cut, bad files refused."""

from __future__ import annotations

import pytest
import torch

from gramx.embed.embedding import Embeddings
from gramx.errors import GramxError
from gramx.index.segment import ROWS_NAME, Segment, SegmentWriter, committed_rows


def plan(dtype: str = "float32") -> dict:
    return {"source": "val.jsonl", "first": 0, "modalities": ["audio", "text"], "dim": 4, "dtype": dtype}


def batch(first: int, n: int) -> Embeddings:
    """Rows ``first..first+n-1``: vector ``[row, row, row, row] / 2``; odd rows have no audio."""
    rows = torch.arange(first, first + n, dtype=torch.float32)
    vectors = rows[:, None].expand(n, 4) / 2
    audio = rows % 2 == 0
    return Embeddings([f"r{i}" for i in range(first, first + n)], [int(i) % 3 for i in rows],
                      list(range(first + 1, first + n + 1)),
                      {"audio": torch.where(audio[:, None], vectors, 0.0), "text": -vectors},
                      {"audio": audio, "text": torch.ones(n, dtype=torch.bool)},
                      {"audio": [f"a{i}.wav" if i % 2 == 0 else None for i in range(first, first + n)],
                       "text": [f"caption {i}" for i in range(first, first + n)]})


def written(folder, dtype: str = "float32", batches: tuple = ((0, 3), (3, 2))) -> Segment:
    writer = SegmentWriter(folder, plan(dtype))
    for first, n in batches:
        writer.add(batch(first, n), next_row=first + n)
    writer.close()
    rows = sum(n for _, n in batches)
    return Segment(folder, rows, ["audio", "text"], 4, dtype, hint="rebuild it with gramx embed")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_vectors_and_rows_read_back_as_written(tmp_path, dtype):
    segment = written(tmp_path / "part-000000", dtype)
    vectors, present = segment.read("audio", 1, 5)
    assert present.tolist() == [False, True, False, True] and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors, torch.tensor([[0.0] * 4, [1.0] * 4, [0.0] * 4, [2.0] * 4]))  # exact in all
    into = torch.empty(5, 4)
    assert segment.read("text", 0, 5, out=into)[0] is into and into[:, 0].tolist() == [0, -0.5, -1, -1.5, -2]
    assert segment.describe([4, 1]) == {1: ("r1", 1, {"text": "caption 1"}),
                                        4: ("r4", 1, {"audio": "a4.wav", "text": "caption 4"})}
    assert segment.find("r3") == 3 and segment.find("nobody") is None


def test_a_reopened_writer_continues_after_its_last_commit_and_cuts_torn_bytes(tmp_path):
    folder = tmp_path / "part-000000"
    writer = SegmentWriter(folder, plan())
    writer.add(batch(0, 3), next_row=3)
    writer.close()
    with (folder / "audio.vec").open("ab") as f:  # a writer killed between its vectors and its commit
        f.write(b"\x01" * 40)
    again = SegmentWriter(folder, plan())
    assert (again.rows, again.next_row) == (3, 3) and committed_rows(folder) == 3
    again.add(batch(3, 2), next_row=5)
    again.close()
    reread = Segment(folder, 5, ["audio", "text"], 4, "float32", hint="rebuild it")
    torch.testing.assert_close(reread.read("audio", 0, 5)[0], written(tmp_path / "clean").read("audio", 0, 5)[0])


def test_a_writer_reopened_with_other_settings_is_refused(tmp_path):
    SegmentWriter(tmp_path, plan()).close()
    with pytest.raises(GramxError, match="begun with other settings .dtype.") as info:
        SegmentWriter(tmp_path, plan("float16"))
    assert "--overwrite" in info.value.hint


def test_files_that_disagree_with_the_record_are_refused_naming_them(tmp_path):
    folder = tmp_path / "part-000000"
    written(folder)
    with pytest.raises(GramxError, match=f"{ROWS_NAME}: holds 5 rows, but index.json records 6"):
        Segment(folder, 6, ["audio", "text"], 4, "float32", hint="rebuild it")
    (folder / "text.has").write_bytes(b"\x01")
    with pytest.raises(GramxError, match=r"text.has: 1 bytes, where index.json's rows need 5") as info:
        Segment(folder, 5, ["audio", "text"], 4, "float32", hint="rebuild it")
    assert info.value.hint == "rebuild it"
    (folder / ROWS_NAME).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(GramxError, match="not a readable row table"):
        Segment(folder, 5, ["audio", "text"], 4, "float32", hint="rebuild it")
