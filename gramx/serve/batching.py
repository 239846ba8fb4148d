"""Searches that arrive together share one pass over the index.

A pass over an index costs about the same for one query as for dozens: every chunk of
vectors is read, and for the Gram volume every candidate's Gram matrix is computed, once per
pass whatever the number of queries. So the server's searches go through one thread that
answers, in one pass, every request that arrived while the previous pass ran: a lone
request waits for nothing, and concurrent requests cost about one pass instead of one each.

::

    batcher = SearchBatcher(index, max_batch=64)
    score, values, positions = batcher.top(query, ["audio", "image"], k=10)   # query [dim]
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from gramx.index.reader import EmbeddingIndex

__all__ = ["MAX_BATCH", "SearchBatcher"]

#: Queries answered by one pass at most (each one's scores of a chunk take ~130 KB on a CPU).
MAX_BATCH = 64


@dataclass
class _Request:
    query: torch.Tensor
    names: tuple[str, ...]
    k: int
    answer: Future = field(default_factory=Future)


class SearchBatcher:
    """Answers :meth:`top` calls from many threads with as few passes over ``index`` as possible.

    Requests that wait together are grouped by their candidate modalities; each group of at
    most ``max_batch`` is one :meth:`EmbeddingIndex.top <gramx.index.reader.EmbeddingIndex.top>`
    call with the largest ``k`` asked, each request getting its own first ``k``.
    """

    def __init__(self, index: EmbeddingIndex, max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.index, self.max_batch = index, max_batch
        self.passes = 0  # passes made so far, for tests and the curious
        self._waiting: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="gramx-search", daemon=True)
        self._worker.start()

    def top(self, query: torch.Tensor, names: Sequence[str], k: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        """``(score name, scores [k'], positions [k'])`` of one ``query [dim]``, as ``index.top`` answers it."""
        request = _Request(query, tuple(names), k)
        self._waiting.put(request)
        return request.answer.result()

    def close(self) -> None:
        """Stop the worker once the requests already waiting are answered."""
        self._waiting.put(None)
        self._worker.join()

    def _serve(self) -> None:
        while (first := self._waiting.get()) is not None:
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    waiting = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    self._waiting.put(None)  # answer this batch, then stop
                    break
                batch.append(waiting)
            groups: dict[tuple[str, ...], list[_Request]] = defaultdict(list)
            for request in batch:
                groups[request.names].append(request)
            for names, requests in groups.items():
                self._answer(names, requests)

    def _answer(self, names: tuple[str, ...], requests: list[_Request]) -> None:
        try:
            queries = torch.stack([r.query for r in requests])
            score, values, positions = self.index.top(queries, names, max(r.k for r in requests))
            self.passes += 1
        except Exception as exc:  # every waiting request hears of it, and the worker goes on
            for r in requests:
                r.answer.set_exception(exc)
            return
        for i, r in enumerate(requests):
            r.answer.set_result((score, values[i, :r.k], positions[i, :r.k]))
