"""Requests that wait together share one pass over the index, each answered as if it were alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex
from gramx.serve.batching import SearchBatcher


class HeldIndex:
    """An index whose first pass waits until released, so that requests pile up behind it."""

    def __init__(self, index: EmbeddingIndex, fail: bool = False):
        self.index, self.fail = index, fail
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[int] = []  # queries per pass

    def top(self, queries, names, k):
        self.calls.append(len(queries))
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30)
        if self.fail:
            raise GramxError("the disk went away")
        return self.index.top(queries, names, k)


@pytest.fixture(scope="module")
def index(digits_index):
    return EmbeddingIndex.load(digits_index.index)


def queries(index, n):
    return F.normalize(torch.randn(n, index.record.model.dim, generator=torch.Generator().manual_seed(n)), dim=-1)


def pile_up(batcher, held, asked):
    """Send ``asked`` (query, names, k) from threads: the first alone, the rest while its pass is held."""
    with ThreadPoolExecutor(len(asked)) as pool:
        first = pool.submit(batcher.top, *asked[0])
        assert held.entered.wait(30)
        rest = [pool.submit(batcher.top, *a) for a in asked[1:]]
        deadline = time.monotonic() + 30
        while batcher._waiting.qsize() < len(rest) and time.monotonic() < deadline:
            time.sleep(0.01)
        held.release.set()
        futures = [first, *rest]
        return [f.exception() or f.result() for f in futures]


def test_waiting_requests_share_a_pass_and_get_what_they_would_alone(index):
    held = HeldIndex(index)
    q = queries(index, 7)
    asked = [(q[0], ["audio"], 3), (q[1], ["audio", "image"], 5), (q[2], ["audio"], 2), (q[3], ["audio", "image"], 1),
             (q[4], ["audio"], 4), (q[5], ["image"], 3), (q[6], ["audio", "image"], 5)]
    batcher = SearchBatcher(held)
    answers = pile_up(batcher, held, asked)
    assert sorted(held.calls) == [1, 1, 2, 3]  # the held one, then audio (2), (audio, image) (3), image (1)
    assert batcher.passes == 4
    for (query, names, k), (score, values, positions) in zip(asked, answers):
        alone = index.top(query[None], names, k)
        assert score == alone[0]
        assert torch.equal(positions, alone[2][0])
        torch.testing.assert_close(values, alone[1][0], rtol=0, atol=1e-6)
    batcher.close()


def test_one_query_a_pass_when_max_batch_is_one(index):
    held = HeldIndex(index)
    batcher = SearchBatcher(held, max_batch=1)
    q = queries(index, 4)
    pile_up(batcher, held, [(q[i], ["audio"], 2) for i in range(4)])
    assert held.calls == [1, 1, 1, 1]
    batcher.close()


def test_a_failed_pass_reaches_each_of_its_requests_and_the_next_pass_runs(index):
    held = HeldIndex(index, fail=True)
    batcher = SearchBatcher(held)
    q = queries(index, 3)
    answers = pile_up(batcher, held, [(q[i], ["audio"], 2) for i in range(3)])
    assert all(isinstance(a, GramxError) and "disk went away" in str(a) for a in answers)
    held.fail = False
    score, values, positions = batcher.top(q[0], ["audio"], 2)
    assert positions.shape == (2,)
    batcher.close()


def test_close_answers_what_waits_then_stops(index):
    batcher = SearchBatcher(index)
    assert batcher.top(queries(index, 1)[0], ["audio"], 1)[2].shape == (1,)
    batcher.close()
    assert not batcher._worker.is_alive()
    with pytest.raises(ValueError, match="at least 1"):
        SearchBatcher(index, max_batch=0)
