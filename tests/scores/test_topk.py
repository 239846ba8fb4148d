"""RunningTopk: chunked selection equals one topk over all candidates."""

import pytest
import torch

from gramx.scores.topk import TOPK_ELEMENTS, TOPK_WIDTH, RunningTopk


def feed(scores: torch.Tensor, widths: list[int], **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    best = RunningTopk(**kwargs)
    start = 0
    for w in widths:
        best.add(scores[:, start : start + w])
        start += w
    assert start == scores.shape[1]
    return best.result(scores.shape[0], scores)


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("width", [1, 7, 40, 1000])  # select every chunk, gather a few, gather all
def test_chunks_equal_one_topk(largest, width):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 97, generator=gen)
    values, idx = feed(scores, [3, 1, 20, 5, 30, 38], k=5, largest=largest, width=width)
    want_values, want_idx = scores.topk(5, dim=1, largest=largest)
    torch.testing.assert_close(values, want_values)
    assert torch.equal(idx, want_idx)
    assert torch.equal(scores.gather(1, idx), values)


def test_fewer_candidates_than_k_and_none():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    values, idx = feed(scores, [2, 1], k=10, width=2)
    assert values.tolist() == [[1.0, 2.0, 3.0]] and idx.tolist() == [[1, 2, 0]]
    values, idx = RunningTopk(4).result(2, scores)
    assert values.shape == (2, 0) and idx.dtype == torch.long


def test_transposed_chunks_are_accepted():
    gen = torch.Generator().manual_seed(1)
    candidate_major = torch.randn(50, 4, generator=gen)  # [n, Nq], as the volume index scores
    best = RunningTopk(3, width=16)
    for start in range(0, 50, 10):
        best.add(candidate_major[start : start + 10].T)
    values, idx = best.result(4, candidate_major)
    want_values, want_idx = candidate_major.T.topk(3, dim=1, largest=False)
    torch.testing.assert_close(values, want_values)
    assert torch.equal(idx, want_idx)


def test_many_queries_gather_fewer_columns():
    few, many = RunningTopk(3), RunningTopk(3)
    few.add(torch.zeros(10, 1))
    many.add(torch.zeros(TOPK_ELEMENTS // 8, 1))
    assert few.width == TOPK_WIDTH and many.width == 8
