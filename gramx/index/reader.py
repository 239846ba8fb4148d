"""Searching an index: opened in bounded memory, many queries answered in one pass over its vectors.

::

    index = EmbeddingIndex.load(folder)          # index.json checked; no vector read yet
    score, hits = index.search(queries, ["audio", "image"], k=10)   # queries [Q, dim]

One candidate modality is ranked by cosine similarity, several by the score of the model
that made the index (the Gram volume, triangle area, multilinear product, ...:
:data:`gramx.scores.similarity.SCORES`) over the rows that have all of them. The rows are
read in chunks of :data:`CHUNK_ROWS` (the next one while the last is scored); each chunk
goes through the score's own index and top-k (:mod:`gramx.scores`), and the chunks' top-k
lists are merged, so memory does not grow with the index. Only the model that made an index may query it (its fingerprint).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gramx.embed.embedding import embed_values
from gramx.errors import GramxError
from gramx.index.record import IndexRecord, read_record, rebuild_hint
from gramx.index.segment import Segment
from gramx.model.model import GramxModel
from gramx.scores.similarity import SCORES
from gramx.scores.topk import merge_topk

__all__ = ["CHUNK_ROWS", "Hit", "EmbeddingIndex"]

#: Rows scored together: large enough that the matrix products run at speed, small enough
#: that a chunk's tuples and scores stay a few hundred MB.
CHUNK_ROWS = 1 << 15


@dataclass
class Hit:
    """One search result: its rank, the row's id, its score and the indexed values shown for it."""

    rank: int
    id: str
    score: float
    values: dict[str, Any]


class EmbeddingIndex:
    """An index folder (see :mod:`gramx.index.record`); :meth:`search` ranks its rows for a batch of queries."""

    def __init__(self, folder: Path, record: IndexRecord, segments: list[Segment]):
        self.folder, self.record, self.segments = folder, record, segments
        self.starts = [sum(s.rows for s in segments[:i]) for i in range(len(segments))]

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingIndex:
        """Open the index at ``folder``: ``index.json`` validated, each segment's files checked against it."""
        folder = Path(folder)
        record = read_record(folder)
        segments = [Segment(folder / s.name, s.rows, record.modalities, record.model.dim, record.dtype,
                            rebuild_hint(folder)) for s in record.segments]
        return cls(folder, record, segments)

    def __len__(self) -> int:
        return self.record.rows

    @property
    def modalities(self) -> list[str]:
        """The indexed modalities."""
        return list(self.record.modalities)

    @property
    def score(self) -> str:
        """The score of the model that made the index, which ranks tuples."""
        return self.record.model.score

    @property
    def sources(self) -> list[Path]:
        """The manifests or shard folders the index's segments were embedded from, as recorded then."""
        return [Path(s.meta["source"]) for s in self.segments if s.meta.get("source")]

    def rows_with(self, name: str) -> int:
        """How many rows have a vector of modality ``name``."""
        return sum(int(s.present[name].sum()) for s in self.segments if s.rows)

    def check_model(self, model: GramxModel) -> None:
        """Refuse a model other than the one that made the index (by dimension and fingerprint)."""
        made_by = self.record.model
        theirs = made_by.path or "another model"
        hint = "search with the model that made the index, or " + rebuild_hint(self.folder)
        if model.source is None:
            raise GramxError(f"the index at {self.folder} was made by {theirs}; this model was never saved, so it "
                             "cannot be checked to be that model", hint=hint)
        if made_by.dim != model.dim:
            raise GramxError(f"the index at {self.folder} was made by {theirs} ({made_by.dim} dimensions); "
                             f"{model.source} embeds in {model.dim}", hint=hint)
        if model.fingerprint != made_by.fingerprint:
            raise GramxError(f"the index at {self.folder} was made by {theirs}, not by {model.source} (their weights "
                             "differ), so its vectors and the query's would live in different spaces", hint=hint)

    def candidates(self, query_modality: str, names: Sequence[str] | None = None) -> list[str]:
        """The candidate modalities: ``names`` (checked), else every indexed one but the query's."""
        chosen = list(names or [m for m in self.modalities if m != query_modality])
        unknown = [m for m in chosen if m not in self.modalities]
        if unknown or not chosen:
            raise GramxError(f"the index has no modality {', '.join(unknown) or '(none chosen)'}",
                             hint=f"indexed modalities: {', '.join(self.modalities)}")
        return chosen

    def chunks(self, part: int = 0, parts: int = 1) -> Iterator[tuple[int, int, int]]:
        """``(segment, start, stop)`` of every chunk of rows; with ``parts``, every ``parts``-th from ``part``."""
        every = [(i, start, min(start + CHUNK_ROWS, s.rows)) for i, s in enumerate(self.segments)
                 for start in range(0, s.rows, CHUNK_ROWS)]
        return iter(every[part::parts])

    def _chunk(self, seg: int, start: int, stop: int, names: Sequence[str], buffer: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tuples ``[n, len(names), dim]`` of rows ``start:stop`` of segment ``seg`` that have all
        of ``names``, and their positions in the index; read into ``buffer [len(names), >= n, dim]``."""
        vectors = buffer[:, :stop - start]
        keep = torch.ones(stop - start, dtype=torch.bool)
        for i, name in enumerate(names):
            keep &= self.segments[seg].read(name, start, stop, out=vectors[i])[1]
        tuples, rows = vectors.transpose(0, 1), torch.arange(start, stop) + self.starts[seg]
        return (tuples, rows) if keep.all() else (tuples[keep], rows[keep])

    @torch.no_grad()
    def top(self, queries: torch.Tensor, names: Sequence[str], k: int, part: int = 0, parts: int = 1,
            ) -> tuple[str, torch.Tensor, torch.Tensor]:
        """``(score name, scores [Q, k], positions [Q, k])``, best first, over this ``part`` of the chunks.

        Positions number the index's rows; a query gets fewer than ``k`` when fewer rows have
        all of ``names``. Scoring runs on the queries' device while a thread reads the next
        chunk into the other of two buffers. Parts of one search merge with
        :func:`gramx.scores.topk.merge_topk`.
        """
        names = self.candidates(None, names)
        if queries.dim() != 2 or queries.shape[1] != self.record.model.dim:
            raise GramxError(f"queries must be [Q, {self.record.model.dim}], got {tuple(queries.shape)}")
        name = "cosine" if len(names) == 1 else self.score
        score, queries = SCORES[name], queries.float()
        best = (torch.empty(queries.shape[0], 0), torch.empty(queries.shape[0], 0, dtype=torch.long))
        chunks = list(self.chunks(part, parts))
        rows_read = max((stop - start for _, start, stop in chunks), default=0)
        buffers = [torch.empty(len(names), rows_read, self.record.model.dim) for _ in chunks[:2]]
        with ThreadPoolExecutor(max_workers=1) as reader:
            ahead = reader.submit(self._chunk, *chunks[0], names, buffers[0]) if chunks else None
            for i in range(len(chunks)):
                tuples, rows = ahead.result()
                if i + 1 < len(chunks):
                    ahead = reader.submit(self._chunk, *chunks[i + 1], names, buffers[(i + 1) % 2])
                if len(rows):
                    values, idx = score.search_once(queries, tuples.to(queries.device), k)
                    best = merge_topk([best, (values.cpu(), rows[idx.cpu()])], k, largest=score.higher_is_better)
        return name, best[0], best[1]

    def describe(self, positions: Iterable[int]) -> dict[int, tuple[str, Any, dict[str, Any]]]:
        """``position -> (id, label, shown values)`` of the index's rows at ``positions``."""
        wanted = sorted(set(positions))
        described = {}
        for segment, start in zip(self.segments, self.starts):
            mine = [p - start for p in wanted if start <= p < start + segment.rows]
            described.update({start + p: row for p, row in segment.describe(mine).items()})
        return described

    def hits(self, scores: torch.Tensor, positions: torch.Tensor, names: Sequence[str]) -> list[list[Hit]]:
        """The :class:`Hit` lists of :meth:`top`'s result: each row's id and its values of ``names``."""
        described = self.describe(positions.flatten().tolist())
        return [[Hit(rank, described[p][0], s, {n: v for n, v in described[p][2].items() if n in names})
                 for rank, (s, p) in enumerate(zip(row_scores, row_positions), start=1)]
                for row_scores, row_positions in zip(scores.tolist(), positions.tolist())]

    def search(self, queries: torch.Tensor, names: Sequence[str], k: int = 10) -> tuple[str, list[list[Hit]]]:
        """The ``k`` best rows for each query of ``queries [Q, dim]``: ``(score name, hits[q], best first)``."""
        score, values, positions = self.top(queries, names, k)
        return score, self.hits(values, positions, names)

    def query(self, model: GramxModel, value: Any, modality: str, names: Sequence[str] | None = None,
              k: int = 10) -> tuple[str, list[Hit]]:
        """Embed one ``value`` of ``modality`` with ``model`` (checked to be the index's) and search for it
        on the model's device.

        ``names``: the candidate modalities (default: every indexed one but the query's).
        """
        self.check_model(model)
        candidates = self.candidates(modality, names)
        score, hits = self.search(embed_values(model, modality, [value]).to(model.device), candidates, k=k)
        return score, hits[0]

    def find(self, rid: str) -> tuple[int, dict[str, Any]] | None:
        """``(position, shown values)`` of the row with id ``rid``, or None."""
        for segment, start in zip(self.segments, self.starts):
            position = segment.find(rid)
            if position is not None:
                return start + position, segment.describe([position])[position][2]
        return None
