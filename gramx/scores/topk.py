"""Top-k over candidates scored chunk by chunk: merged top-k lists and a running top-k.

Retrieval scores ``Nq`` queries against candidates in chunks, so that memory does not grow
with the number of candidates. Keeping the best ``k`` per query over those chunks costs
little when each ``topk`` call sees wide rows; on CPUs ``topk`` over narrow rows is
dominated by its per-row overhead (measured with 1,000 queries: 20,000 candidates in
chunks of 500 take about 6x the time of one call). :class:`RunningTopk` therefore gathers
narrow chunks until they span :data:`TOPK_WIDTH` columns (fewer for many queries: about
:data:`TOPK_ELEMENTS` scores) before selecting.
"""

from __future__ import annotations

import torch

__all__ = ["merge_topk", "RunningTopk", "TOPK_WIDTH", "TOPK_ELEMENTS"]

#: Columns gathered before a ``topk`` call: beyond a few thousand, wider rows gain little.
TOPK_WIDTH = 4096
#: Scores gathered at most (16 MiB in float32), so many queries gather fewer columns.
TOPK_ELEMENTS = 1 << 22


def merge_topk(
    parts: list[tuple[torch.Tensor, torch.Tensor]], k: int, largest: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge per-shard ``(scores, indices)`` top-k lists into the global ``k`` smallest (or largest).

    Indices must already be global (offset by each shard's start).
    """
    values = torch.cat([v for v, _ in parts], dim=1)
    indices = torch.cat([i for _, i in parts], dim=1)
    top, pos = values.topk(min(k, values.shape[1]), dim=1, largest=largest)
    return top, indices.gather(1, pos)


class RunningTopk:
    """The ``k`` best scores per query over candidate chunks fed in order with :meth:`add`.

    ``width``: columns gathered before each selection (default from the number of queries,
    see :data:`TOPK_WIDTH` and :data:`TOPK_ELEMENTS`).
    """

    def __init__(self, k: int, largest: bool = False, width: int | None = None):
        self.k, self.largest, self.width = k, largest, width
        self._pending: list[torch.Tensor] = []
        self._pending_start = 0
        self._seen = 0
        self._best: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, scores: torch.Tensor) -> None:
        """Take ``scores[Nq, n]`` of the next ``n`` candidates."""
        if self.width is None:
            self.width = max(1, min(TOPK_WIDTH, TOPK_ELEMENTS // max(1, scores.shape[0])))
        if not self._pending:
            self._pending_start = self._seen
        self._pending.append(scores)
        self._seen += scores.shape[1]
        if self._seen - self._pending_start >= self.width:
            self._select()

    def _select(self) -> None:
        block = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending, dim=1)
        self._pending = []
        values, idx = block.topk(min(self.k, block.shape[1]), dim=1, largest=self.largest, sorted=False)
        part = (values, idx + self._pending_start)
        self._best = part if self._best is None else merge_topk([self._best, part], self.k, self.largest)

    def result(self, num_queries: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, indices)``, ``[Nq, min(k, seen)]`` each, best first."""
        if self._pending:
            self._select()
        if self._best is None:
            empty = like.new_empty(num_queries, 0)
            return empty, empty.long()
        values, idx = self._best
        order = values.argsort(dim=1, descending=self.largest, stable=True)
        return values.gather(1, order), idx.gather(1, order)
