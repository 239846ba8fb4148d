"""Retrieval metrics (gramx.evaluate.metrics) on hand-made score matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gramx.evaluate.metrics import average_precision, ranks, retrieval_metrics, zeroshot_accuracy


def scores_with_ranks(target_ranks: list[int], num_candidates: int) -> torch.Tensor:
    """Distinct volumes (lower = better) where query i's own candidate i has rank target_ranks[i]."""
    rows = []
    for i, r in enumerate(target_ranks):
        others = [j for j in range(num_candidates) if j != i]
        order = others[: r - 1] + [i] + others[r - 1 :]  # best first
        row = torch.empty(num_candidates, dtype=torch.float64)
        row[torch.tensor(order)] = torch.arange(num_candidates, dtype=torch.float64) / 10
        rows.append(row)
    return torch.stack(rows)


def test_hand_made_ranks_and_metrics():
    target = [1, 2, 5, 6, 10, 11, 12, 3]
    scores = scores_with_ranks(target, 12)
    assert ranks(scores).tolist() == target
    m = retrieval_metrics(scores)
    assert m["R@1"] == pytest.approx(100 * 1 / 8)
    assert m["R@5"] == pytest.approx(100 * 4 / 8)  # ranks 1, 2, 3, 5
    assert m["R@10"] == pytest.approx(100 * 6 / 8)  # ... and 6, 10
    assert m["MedR"] == pytest.approx(5.5)  # median of 1 2 3 5 | 6 10 11 12
    assert m["MeanR"] == pytest.approx(50 / 8)
    assert m["mAP"] == pytest.approx(100 * np.mean([1 / r for r in target]))  # one relevant item each


def test_higher_is_better_flips_the_order():
    target = [1, 4, 2, 3]
    volumes = scores_with_ranks(target, 6)
    assert ranks(-volumes, higher_is_better=True).tolist() == target
    assert retrieval_metrics(-volumes, higher_is_better=True) == retrieval_metrics(volumes)
    # the same numbers read as similarities give the reverse ranks
    assert ranks(volumes, higher_is_better=True).tolist() == [6 - r + 1 for r in target]


def test_constant_scores_rank_every_query_last():
    m = retrieval_metrics(torch.zeros(7, 7))
    assert ranks(torch.zeros(7, 7)).tolist() == [7] * 7
    assert m["R@1"] == 0.0 and m["R@5"] == 0.0 and m["R@10"] == 100.0
    assert m["MedR"] == 7 and m["MeanR"] == 7
    assert m["mAP"] == pytest.approx(100 / 7)


def test_ties_count_against_the_query():
    scores = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.4],  # rank 1
            [0.1, 0.5, 0.2, 0.6],  # two strictly better: rank 3
            [0.3, 0.3, 0.3, 0.9],  # tied with two others: rank 3, not 1
            [0.0, 0.1, 0.2, 0.3],  # rank 4
        ]
    )
    assert ranks(scores).tolist() == [1, 3, 3, 4]
    m = retrieval_metrics(scores)
    assert m["R@1"] == 25.0 and m["MedR"] == 3.0 and m["MeanR"] == 2.75
    # average precision puts the tied irrelevant items first as well
    ap = average_precision(scores)
    torch.testing.assert_close(ap, torch.tensor([1, 1 / 3, 1 / 3, 1 / 4], dtype=torch.float64))


def test_many_to_many_positives():
    scores = torch.tensor(
        [
            [0.5, 0.4, 0.1, 0.2, 0.9],  # relevant {1, 3}: best relevant is 3, one better: rank 2
            [0.3, 0.3, 0.9, 0.1, 0.8],  # relevant {0}: one better, one irrelevant tie: rank 3
            [0.2, 0.2, 0.5, 0.6, 0.7],  # relevant {0, 1}, tied with each other: rank 1
        ]
    )
    positives = torch.tensor(
        [
            [False, True, False, True, False],
            [True, False, False, False, False],
            [True, True, False, False, False],
        ]
    )
    assert ranks(scores, positives=positives).tolist() == [2, 3, 1]
    m = retrieval_metrics(scores, positives=positives)
    assert m["R@1"] == pytest.approx(100 / 3)
    assert m["MedR"] == 2 and m["MeanR"] == 2
    # AP: q0 hits at positions 2 and 3 -> (1/2 + 2/3) / 2; q1 hit at 3 (tie first); q2 hits at 1, 2
    expected_ap = [(1 / 2 + 2 / 3) / 2, 1 / 3, 1.0]
    torch.testing.assert_close(average_precision(scores, positives=positives), torch.tensor(expected_ap, dtype=torch.float64))
    assert m["mAP"] == pytest.approx(100 * np.mean(expected_ap))


def test_rectangular_diagonal_and_numpy_input():
    scores = np.array([[0.2, 0.1, 0.3, 0.4, 0.5], [0.9, 0.1, 0.3, 0.4, 0.5]])  # 2 queries, 5 candidates
    assert ranks(scores).tolist() == [2, 1]
    assert retrieval_metrics(scores)["R@1"] == 50.0
    with pytest.raises(ValueError):
        retrieval_metrics(scores.T)  # more queries than candidates needs positives=


def test_metric_keys_and_input_checks():
    m = retrieval_metrics(torch.eye(3))
    assert set(m) >= {"R@1", "R@5", "R@10", "MedR", "MeanR", "mAP"}
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(3))
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(2, 2), positives=torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError):
        retrieval_metrics(torch.zeros(2, 2), positives=torch.ones(2, 3, dtype=torch.bool))


def test_metrics_agree_with_a_brute_force_rank_count():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 40), generator=gen).double()  # many ties
    brute = []
    for i in range(40):
        s = scores[i]
        brute.append(1 + int((s < s[i]).sum()) + int((s == s[i]).sum()) - 1)
    assert ranks(scores).tolist() == brute


def test_nan_score_on_the_positive_is_not_a_hit():
    scores = torch.tensor([[float("nan"), 0.1, 0.2], [0.3, 0.1, 0.2], [0.3, 0.2, 0.1]])
    assert ranks(scores)[0] > 1


def test_zeroshot_accuracy():
    prompts = torch.eye(3)
    items = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.6, 0.5, 0.0], [0.0, 0.9, 0.1]])
    assert zeroshot_accuracy(items, prompts, [0, 2, 1, 1]) == pytest.approx(75.0)
