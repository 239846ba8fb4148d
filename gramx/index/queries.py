"""Many queries at once: read from a file, embedded in blocks, each block answered in one pass over the index.

A query file is a manifest (``.jsonl``/``.csv``: each row's value of the query modality,
named by its id) or a text file (``.txt``: one query per line, a text or a path). Each
block of :data:`QUERY_BLOCK` queries is embedded and scored against every chunk of the
index once (:meth:`gramx.index.reader.EmbeddingIndex.top`). Under torchrun each process
scores its own share of the index's chunks and the processes' top-k lists are merged, so
the answers equal one process's; every process reads the same queries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from gramx.data.manifest import iter_rows
from gramx.embed.embedding import embed_values
from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex, Hit
from gramx.model.model import GramxModel
from gramx.runtime.distributed import DistContext, all_gather_object
from gramx.scores.similarity import SCORES
from gramx.scores.topk import merge_topk

__all__ = ["QUERY_BLOCK", "read_queries", "answer_queries"]

#: Queries embedded and scored together in one pass over the index.
QUERY_BLOCK = 1024


def read_queries(path: str | Path, modality: str) -> Iterator[tuple[str, Any]]:
    """``(id, value)`` of each query in ``path`` (see the module docstring); ids default to ``FILE:LINE``."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        with path.open(encoding="utf-8-sig") as f:
            for line, text in enumerate(f, start=1):
                if text.strip():
                    yield f"{path.stem}:{line}", text.strip()
        return
    for row in iter_rows(path):
        if modality not in row.values:
            raise GramxError(f"{path} line {row.line}: no {modality} value to query with",
                             hint=f"each row of a query manifest needs a {modality!r} value")
        value = row.values[modality]
        yield row.id, value


def answer_queries(model: GramxModel, index: EmbeddingIndex, queries: Iterator[tuple[str, Any]], modality: str,
                   names: Sequence[str], k: int, ctx: DistContext | None = None, base: str | Path | None = None,
                   ) -> Iterator[tuple[str, Any, str, list[Hit]]]:
    """``(id, value, score name, hits)`` for each query, in order; ``base``: where relative paths resolve."""
    index.check_model(model)
    names = index.candidates(modality, names)
    ctx = ctx or DistContext()
    while block := list(islice(queries, QUERY_BLOCK)):
        vectors = embed_values(model, modality, [value for _, value in block], base=base).to(model.device)
        score, values, positions = index.top(vectors, names, k, part=ctx.rank, parts=ctx.world_size)
        if ctx.distributed:
            parts = all_gather_object((values, positions))
            values, positions = merge_topk(parts, k, largest=SCORES[score].higher_is_better)
        for (qid, value), hits in zip(block, index.hits(values, positions, names)):
            yield qid, value, score, hits
