"""The evaluation report (gramx.evaluate.report): its keys, n-way retrieval by the model's score, class names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gramx.embed.embedding import Embeddings
from gramx.errors import GramxError
from gramx.evaluate.report import evaluate, read_classes, summarize, zeroshot_targets
from gramx.scores.similarity import SCORES


class Scored:
    """A stand-in for a model: the report reads only its ``score`` (and ``names`` for zero-shot)."""

    names: list[str] = []

    def __init__(self, score: str):
        self.score = score


def embeddings(names: list[str], n: int = 6, absent: dict[str, list[int]] | None = None, seed: int = 0) -> Embeddings:
    """``n`` aligned tuples: each modality is its row's own direction plus a little noise (row i matches row i)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(n, 8, generator=gen)
    feats = {name: F.normalize(centre + 0.1 * torch.randn(n, 8, generator=gen), dim=-1) for name in names}
    masks = {name: torch.ones(n, dtype=torch.bool) for name in names}
    for name, rows in (absent or {}).items():
        masks[name][rows] = False
        feats[name][rows] = 0
    return Embeddings([f"r{i}" for i in range(n)], [None] * n, list(range(1, n + 1)), feats, masks,
                      {name: [None] * n for name in names})


def test_the_report_has_the_contract_keys_and_ranks_aligned_tuples_first():
    report = evaluate(Scored("volume"), embeddings(["a", "b", "c"]), parts=["retrieval", "nway"])
    assert set(report) == {"tuples", "score", "retrieval", "nway", "nway_cosine", "zeroshot"}
    assert report["tuples"] == 6 and report["score"] == "volume" and report["zeroshot"] == {}
    assert set(report["retrieval"]) == {f"{x}->{y}" for x in "abc" for y in "abc" if x != y}
    assert set(report["nway"]) == {"a->(b,c)", "(b,c)->a", "b->(a,c)", "(a,c)->b", "c->(a,b)", "(a,b)->c"}
    assert set(report["nway_cosine"]) == set(report["nway"])
    for metrics in [*report["retrieval"].values(), *report["nway"].values()]:
        assert metrics["R@1"] == 100.0 and metrics["MedR"] == 1  # the noise is far smaller than the rows' spread


@pytest.mark.parametrize("score", sorted(SCORES))
@pytest.mark.parametrize("names", [["a", "b", "c"], ["a", "b", "c", "d"]])
def test_nway_uses_the_models_score_for_any_number_of_modalities(score, names):
    """The area is defined for pairs only: with tuples of three it is left out, not a crash."""
    report = evaluate(Scored(score), embeddings(names), parts=["nway"])
    assert report["score"] == score and len(report["nway_cosine"]) == 2 * len(names)
    fits = SCORES[score].tuple_size in (None, len(names) - 1)
    assert set(report["nway"]) == (set(report["nway_cosine"]) if fits else set())
    assert all(0 <= metrics["R@1"] <= 100 and metrics["MedR"] >= 1 for metrics in report["nway"].values())


def test_nway_takes_only_rows_where_every_modality_is_present():
    report = evaluate(Scored("volume"), embeddings(["a", "b", "c"], absent={"c": [0, 1]}), parts=["nway"])
    assert report["tuples"] == 6
    assert report["nway"]["a->(b,c)"]["MeanR"] <= 4  # four candidates: the rows that have all three
    alone = evaluate(Scored("volume"), embeddings(["a", "b", "c"], absent={"c": [0, 1, 2, 3, 4, 5]}), parts=["nway"])
    assert alone["nway"] == {}  # fewer than three modalities present anywhere


def test_cosine_nway_is_the_cosine_sum_baseline_itself():
    report = evaluate(Scored("cosine"), embeddings(["a", "b", "c"]), parts=["nway"])
    assert report["nway"] == report["nway_cosine"]


def test_class_names_come_from_a_file_or_a_list(tmp_path):
    (tmp_path / "classes.txt").write_text("zero\n one \n\n")
    assert read_classes(tmp_path / "classes.txt") == ["zero", "one"] and read_classes((0, 1)) == ["0", "1"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(GramxError, match="empty.txt: no class names"):
        read_classes(tmp_path / "empty.txt")
    with pytest.raises(GramxError, match="cannot read class names from .*missing.txt"):
        read_classes(tmp_path / "missing.txt")


def test_zeroshot_targets_map_labels_to_class_indices():
    assert zeroshot_targets([1, None, "zero"], ["zero", "one"]) == (["zero", "one"], [1, None, 0])
    assert zeroshot_targets(["b", "a", "b"], None) == (["a", "b"], [1, 0, 1])
    assert zeroshot_targets([0, 1], None) is None  # integer labels need class names
    with pytest.raises(GramxError, match="label 'two' has no class name"):
        zeroshot_targets(["two"], ["zero", "one"])


def test_summarize_digests_each_kind():
    report = evaluate(Scored("volume"), embeddings(["a", "b", "c"]), parts=["retrieval", "nway"])
    assert summarize(report) == "retrieval mean R@1 100.0, nway mean R@1 100.0"
    assert summarize({"zeroshot": {"b": 50.0}}) == "zero-shot b 50.0%" and summarize({}) == "no metrics"
