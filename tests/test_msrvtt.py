"""The MSR-VTT numbers of benchmarks/data/msrvtt-gram/SOURCE.md, reproduced exactly.

The embeddings are the official GRAM model's (github.com/ispamm/GRAM, MIT licence; see
SOURCE.md in that folder for the attribution). 884 test items, ground truth on the diagonal.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "msrvtt_reproduce.py"

# (step, scoring) -> R@1, R@5, R@10, MedR (ties against the query), R@1 with ties in its favour
EXPECTED = {
    (99, "volume(t, v, a, s), text->video"): (43.7, 70.6, 80.1, 2, 43.7),
    (99, "volume(t, v, a, s), video->text"): (37.3, 65.7, 76.1, 3, 37.8),
    (99, "cosine(t, v), text->video"): (41.5, 70.6, 81.4, 2, 41.5),
    (99, "cosine(t, v), video->text"): (37.2, 66.5, 75.8, 2, 37.7),
    (0, "volume(t, v, a, s), text->video"): (24.1, 43.1, 50.6, 10, 24.1),
    (0, "volume(t, v, a, s), video->text"): (33.0, 64.7, 75.1, 3, 33.5),
    (0, "cosine(t, v), text->video"): (44.9, 72.4, 82.5, 2, 44.9),
    (0, "cosine(t, v), video->text"): (32.7, 63.9, 75.6, 3, 33.1),
}


@pytest.fixture(scope="module")
def msrvtt(one_thread):
    spec = importlib.util.spec_from_file_location("msrvtt_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(msrvtt):
    return {(r.step, r.scoring): r for step in (99, 0) for r in msrvtt.evaluate_step(step)}


def test_data_is_the_documented_embeddings(msrvtt):
    emb = msrvtt.load(99)
    assert set(emb) == {"text", "video", "audio", "subtitles"}
    for x in emb.values():
        assert x.shape == (884, 512)
        torch.testing.assert_close(x.norm(dim=1), torch.ones(884, dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("key", list(EXPECTED), ids=[f"step{s}-{name}" for s, name in EXPECTED])
def test_reproduces_source_md_exactly(rows, key):
    v = rows[key].values
    r1, r5, r10, medr, r1_favour = EXPECTED[key]
    assert round(v["R@1"], 1) == r1
    assert round(v["R@5"], 1) == r5
    assert round(v["R@10"], 1) == r10
    assert v["MedR"] == medr
    assert round(v["R@1 favour"], 1) == r1_favour


def test_fine_tuned_volume_beats_cosine_text_to_video(rows):
    assert rows[(99, "volume(t, v, a, s), text->video")].values["R@1"] > rows[(99, "cosine(t, v), text->video")].values["R@1"]
    assert rows[(0, "volume(t, v, a, s), text->video")].values["R@1"] < rows[(0, "cosine(t, v), text->video")].values["R@1"]


def test_script_reads_the_same_table_from_source_md(msrvtt):
    published = msrvtt.expected_rows()
    assert set(published) == set(EXPECTED)
    for key, cells in published.items():
        assert [float(c) for c in cells] == [float(x) for x in EXPECTED[key]]


def test_script_passes_and_its_check_catches_a_difference(msrvtt, rows, capsys, monkeypatch):
    assert msrvtt.mismatches(list(rows.values()), msrvtt.expected_rows()) == []
    published = msrvtt.expected_rows()
    key = (99, "volume(t, v, a, s), video->text")
    published[key] = ["37.8"] + published[key][1:]  # the tie rule in the query's favour
    problems = msrvtt.mismatches(list(rows.values()), published)
    assert len(problems) == 1 and "R@1 37.3 != 37.8" in problems[0]
    # main() on the rows computed above (recomputing them would double this file's run time)
    monkeypatch.setattr(msrvtt, "evaluate_step", lambda step, data: [r for r in rows.values() if r.step == step])
    assert msrvtt.main([]) == 0
    assert "all 8 rows" in capsys.readouterr().out
    rows[key].values["R@5"] += 0.1  # a different number makes the script fail
    try:
        assert msrvtt.main([]) == 1
    finally:
        rows[key].values["R@5"] -= 0.1
    assert "DIFFERS" in capsys.readouterr().out
