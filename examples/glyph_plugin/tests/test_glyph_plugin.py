"""The glyph example plugin passes the conformance kit and joins glyphs to manifests by label."""

import json

import numpy as np
import pytest

from gramx.testing import ModalityConformance, fresh_host, run_in_host
from gramx_glyph import data


@pytest.fixture(scope="module")
def glyph():
    with fresh_host() as host:
        yield host.get_modality("glyph")


@pytest.fixture
def bad_files(tmp_path):
    wrong_shape = tmp_path / "wrong-shape.npy"
    np.save(wrong_shape, np.zeros((4, 4)))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    return [wrong_shape, garbage]


class TestGlyphConformance(ModalityConformance):
    @pytest.fixture(autouse=True)
    def _setup(self, glyph, bad_files):
        self.modality = glyph
        self.samples = list(glyph.samples)
        self.bad_inputs = bad_files


def test_runs_through_the_host(tmp_path):
    run = run_in_host("glyph", tmp_path, distribution="gramx-glyph")
    assert run.status.modalities == ["glyph"] and run.embeddings.shape == (4, 8)


def test_glyph_loads_in_unit_range(glyph):
    x = glyph.load(glyph.samples[0], glyph.default_config())
    assert x.shape == (1, 8, 8) and 0 <= x.min() and x.max() <= 1


def test_add_glyphs_joins_by_label_with_disjoint_splits(tmp_path):
    (tmp_path / "in" / "audio").mkdir(parents=True)
    (tmp_path / "in" / "audio" / "a.flac").write_bytes(b"")
    rows = [{"id": f"r{i}", "label": i % 10, "text": "x", "audio": "audio/a.flac"} for i in range(30)]
    (tmp_path / "in" / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert data.add_glyphs(tmp_path / "in" / "in.jsonl", tmp_path / "out.jsonl", "train") == 30
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {row["audio"] for row in out} == {"in/audio/a.flac"} and out[0]["text"] == "x"
    train, test = data.glyphs_by_class("train"), data.glyphs_by_class("test")
    for row in out:
        grid = np.load(tmp_path / row["glyph"])
        assert any(np.array_equal(grid, g) for g in train[row["label"]])
    for label in range(10):  # no glyph serves both splits
        assert not any(np.array_equal(a, b) for a in train[label] for b in test[label])
