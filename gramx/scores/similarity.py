"""Joint similarity scores of a query and a candidate tuple, their indexes, and the table of scores.

A model scores retrieval with the similarity it was trained with (``score`` in its config):

- ``volume``: the Gram volume of (query, tuple) (:mod:`gramx.scores.volume`), smaller is better;
- ``area``: the area of the triangle whose corners are the endpoints of the query and of a
  tuple of two (TRIANGLE), smaller is better; unlike the volume it sees a vector's sign;
- ``mip``: the multilinear inner product ``sum_k q_k c1_k ... cm_k`` (Symile), larger is better;
- ``cosine``: the sum of the query's cosine similarities with the tuple's vectors, larger is better;
- ``singular``: the largest singular value of the matrix of the query and the tuple's vectors
  (PMRL: the tuple's shared direction), larger is better; like the volume it is blind to signs.

Each has an index built once from the candidates ``[Nc, m, d]`` that scores query batches in
chunks (:meth:`scores`) and keeps a running top-k (:meth:`search`), so memory does not grow
with the number of candidates; area and multilinear product reduce to matrix products
against precomputed candidate terms. :data:`SCORES` names them for the evaluation report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gramx.scores.topk import RunningTopk
from gramx.scores.volume import CUDA_BLOCK_ELEMENTS, VolumeIndex, safe_sqrt
from gramx.scores.volume_once import volume_search_once

__all__ = ["triangle_area", "area_matrix", "AreaIndex", "multilinear_product", "mip_matrix", "ProductIndex",
           "SingularIndex", "Score", "SCORES", "score_matrix"]


def _working(x: torch.Tensor) -> torch.Tensor:
    return x.double() if x.dtype == torch.float64 else x.float()


def _area_from_sides(uu: torch.Tensor, vv: torch.Tensor, bc2: torch.Tensor, squared: bool) -> torch.Tensor:
    """Area of the triangle (q, b, c) from its squared sides ``|b-q|^2``, ``|c-q|^2``, ``|c-b|^2``.

    With ``u = b - q`` and ``v = c - q``: ``u.v = (|u|^2 + |v|^2 - |b-c|^2) / 2`` and
    ``area = sqrt(|u|^2 |v|^2 - (u.v)^2) / 2`` (Lagrange's identity). ``squared=True`` gives
    TRIANGLE's training quantity ``(|u|^2 |v|^2 - (u.v)^2) / 2`` (``2 area^2``), which its
    authors use without the square root. Without autograd the work happens in place.
    """
    if torch.is_grad_enabled() and (uu.requires_grad or vv.requires_grad or bc2.requires_grad):
        uv = (uu + vv - bc2) / 2
        gram = (uu * vv - uv * uv).clamp(min=0)
        return gram / 2 if squared else safe_sqrt(gram, torch.finfo(gram.dtype).eps ** 0.5) / 2
    uv = torch.add(uu, vv).sub_(bc2).mul_(0.5)
    gram = uu.mul_(vv).addcmul_(uv, uv, value=-1).clamp_(min=0)
    return gram.mul_(0.5) if squared else gram.sqrt_().mul_(0.5)


def _with_norm(x: torch.Tensor) -> torch.Tensor:
    """``[x, 1, |x|^2]``: a query row whose product with :func:`_side_terms` is a squared distance."""
    return torch.cat([x, torch.ones_like(x[:, :1]), (x * x).sum(-1, keepdim=True)], dim=1)


def _side_terms(x: torch.Tensor) -> torch.Tensor:
    """``[-2x, |x|^2, 1]``, so that ``_with_norm(q) @ _side_terms(x).T = |x - q|^2`` (one matrix product)."""
    return torch.cat([-2 * x, (x * x).sum(-1, keepdim=True), torch.ones_like(x[:, :1])], dim=1)


def triangle_area(x: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Area of the triangle whose corners are the endpoints of the 3 vectors in ``x[..., 3, d]``: ``[...]``."""
    if x.dim() < 2 or x.shape[-2] != 3:
        raise ValueError(f"triangle_area expects [..., 3, d], got shape {tuple(x.shape)}")
    x = _working(x)
    q, b, c = x.unbind(-2)
    square = lambda v: torch.linalg.vecdot(v, v)  # noqa: E731
    return _area_from_sides(square(b - q), square(c - q), square(c - b), squared)


def _check_tuples(c: torch.Tensor, m: int | None = None) -> None:
    if c.dim() != 3 or (m is not None and c.shape[1] != m):
        want = f"[Nc, {m}, d]" if m else "[Nc, m, d]"
        raise ValueError(f"candidates must be {want}, got shape {tuple(c.shape)}")


def _chunked_search(scores_of: Callable[[int, int], torch.Tensor], count: int, q: torch.Tensor, k: int,
                    step: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k over candidate chunks: ``scores_of(start, stop) -> [Nq, stop - start]``."""
    best = RunningTopk(k, largest)
    for start in range(0, count, step):
        best.add(scores_of(start, min(start + step, count)))
    return best.result(q.shape[0], q)


#: Elements of the ``[Nq, chunk]`` score blocks per chunk on CPUs: small enough that the
#: element-wise work after the matrix products stays in cache (measured: 2^19-2^21 best,
#: 1.5x slower at 2^23); on GPUs, large blocks keep launches few.
SCORE_BLOCK_ELEMENTS = 1 << 20


def _chunk(num_queries: int, terms: int, block_elements: int | None, device: torch.device) -> int:
    default = SCORE_BLOCK_ELEMENTS if device.type == "cpu" else CUDA_BLOCK_ELEMENTS
    return max(1, (block_elements or default) // max(1, num_queries * terms))


@dataclass
class AreaIndex:
    """Candidate pairs ``(b_j, c_j)`` prepared for triangle-area retrieval against queries.

    Keeps ``[-2b, |b|^2, 1]`` and ``[-2c, |c|^2, 1]`` and ``|b - c|^2`` per candidate, so the
    squared sides ``|b - q|^2`` and ``|c - q|^2`` of a query batch are two matrix products,
    and the area follows element-wise, in place, chunk by chunk.
    """

    b: torch.Tensor
    c: torch.Tensor
    bc2: torch.Tensor
    squared: bool = False
    higher_is_better = False

    @classmethod
    def build(cls, candidates: torch.Tensor, mask: torch.Tensor | None = None, squared: bool = False) -> AreaIndex:
        """Prepare ``candidates[Nc, 2, d]``; every candidate needs both vectors (a triangle has three corners)."""
        _check_tuples(candidates, 2)
        if mask is not None and not bool(mask.all()):
            raise ValueError("the triangle area needs all three corners: leave incomplete candidates out")
        x = _working(candidates)
        b, c = x[:, 0], x[:, 1]
        return cls(_side_terms(b), _side_terms(c), torch.linalg.vecdot(b - c, b - c), squared)

    def __len__(self) -> int:
        return self.b.shape[0]

    def _scores(self, q: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return _area_from_sides(q @ self.b[start:stop].T, q @ self.c[start:stop].T, self.bc2[None, start:stop],
                                self.squared)

    def _queries(self, queries: torch.Tensor) -> torch.Tensor:
        return _with_norm(queries.to(self.b.dtype))

    def scores(self, queries: torch.Tensor, block_elements: int | None = None) -> torch.Tensor:
        """``[Nq, Nc]`` areas of ``(q_i, b_j, c_j)``; differentiable."""
        q = self._queries(queries)
        step = _chunk(q.shape[0], 2, block_elements, q.device)
        parts = [self._scores(q, s, min(s + step, len(self))) for s in range(0, len(self), step)]
        return torch.cat(parts, dim=1) if parts else q.new_empty(q.shape[0], 0)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10, block_elements: int | None = None):
        """The ``k`` smallest areas per query and their candidate indices."""
        q = self._queries(queries)
        step = _chunk(q.shape[0], 2, block_elements, q.device)
        return _chunked_search(lambda s, e: self._scores(q, s, e), len(self), q, k, step, False)


def area_matrix(q: torch.Tensor, c: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Areas of the triangles ``(q_i, c_j1, c_j2)``: ``q[Nq, d]``, ``c[Nc, 2, d]`` -> ``[Nq, Nc]``."""
    return AreaIndex.build(c, squared=squared).scores(q)


def multilinear_product(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multilinear inner product ``sum_k prod_i x[..., i, k]`` of ``x[..., m, d]``; missing vectors drop out."""
    return _product(x, mask).sum(-1)


def _product(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Element-wise product of the vectors of ``x[..., m, d]``; a missing vector counts as all ones."""
    x = _working(x)
    if mask is not None:
        x = torch.where(mask.unsqueeze(-1), x, torch.ones((), dtype=x.dtype, device=x.device))
    return x.prod(dim=-2)


@dataclass
class ProductIndex:
    """Candidate tuples reduced to one vector each, scored by a dot product with the query.

    ``kind="mip"``: the element-wise product of the tuple's vectors (multilinear inner product
    with the query); ``kind="cosine"``: their sum (the sum of the query's cosine similarities).
    """

    vectors: torch.Tensor
    higher_is_better = True

    @classmethod
    def build(cls, candidates: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "mip") -> ProductIndex:
        _check_tuples(candidates)
        if kind == "mip":
            return cls(_product(candidates, mask))
        x = _working(candidates)
        if mask is not None:
            x = x * mask.unsqueeze(-1)
        return cls(x[:, 0] if x.shape[1] == 1 else x.sum(dim=1))  # one vector: a view, not a copy

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def scores(self, queries: torch.Tensor, block_elements: int | None = None) -> torch.Tensor:
        """``[Nq, Nc]`` scores (larger is better); differentiable."""
        return queries.to(self.vectors.dtype) @ self.vectors.T

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10, block_elements: int | None = None):
        """The ``k`` largest scores per query and their candidate indices."""
        q = queries.to(self.vectors.dtype)
        step = _chunk(queries.shape[0], 1, block_elements, queries.device)
        return _chunked_search(lambda s, e: q @ self.vectors[s:e].T, len(self), q, k, step, True)


def mip_matrix(q: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multilinear inner products of ``(q_i, c_j1..c_jm)``: ``q[Nq, d]``, ``c[Nc, m, d]`` -> ``[Nq, Nc]``."""
    return ProductIndex.build(c, mask).scores(q)


@dataclass
class SingularIndex:
    """Candidate tuples scored by the largest singular value of (query, tuple) (PMRL), larger is better.

    The squared singular values of the matrix whose columns are the query and the tuple's
    vectors are the eigenvalues of their Gram matrix: the tuple's own Gram matrix (kept per
    candidate), bordered by the query's dot products with its vectors (one matrix product per
    chunk). A missing vector is a zero column, which leaves the largest singular value alone.
    """

    vectors: torch.Tensor
    gram: torch.Tensor
    higher_is_better = True

    @classmethod
    def build(cls, candidates: torch.Tensor, mask: torch.Tensor | None = None) -> SingularIndex:
        _check_tuples(candidates)
        x = _working(candidates)
        if mask is not None:
            x = x * mask.unsqueeze(-1)
        return cls(x, x @ x.transpose(1, 2))

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def _scores(self, q: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        dots = torch.einsum("qd,cmd->qcm", q, self.vectors[start:stop])  # [Nq, C, m]
        gram = self.gram[None, start:stop].expand(q.shape[0], -1, -1, -1)
        norms = (q * q).sum(-1)[:, None, None, None].expand(-1, dots.shape[1], 1, 1)
        bordered = torch.cat([torch.cat([norms, dots.unsqueeze(2)], dim=3),
                              torch.cat([dots.unsqueeze(3), gram], dim=3)], dim=2)  # [Nq, C, m+1, m+1]
        return torch.linalg.eigvalsh(bordered)[..., -1].clamp(min=0).sqrt()

    def _chunk(self, q: torch.Tensor, block_elements: int | None) -> int:
        return _chunk(q.shape[0], (self.vectors.shape[1] + 1) ** 2, block_elements, q.device)

    def scores(self, queries: torch.Tensor, block_elements: int | None = None) -> torch.Tensor:
        """``[Nq, Nc]`` largest singular values of ``(q_i, c_j1..c_jm)``; differentiable."""
        q = queries.to(self.vectors.dtype)
        step = self._chunk(q, block_elements)
        parts = [self._scores(q, s, min(s + step, len(self))) for s in range(0, len(self), step)]
        return torch.cat(parts, dim=1) if parts else q.new_empty(q.shape[0], 0)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10, block_elements: int | None = None):
        """The ``k`` largest singular values per query and their candidate indices."""
        q = queries.to(self.vectors.dtype)
        return _chunked_search(lambda s, e: self._scores(q, s, e), len(self), q, k, self._chunk(q, block_elements),
                               True)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.float() @ b.float().T


def _pair_volume(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
    return (1 - cos * cos).clamp(min=0).sqrt()


def _pair_singular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
    return (1 + cos.abs()).sqrt()


@dataclass(frozen=True)
class Score:
    """A joint similarity: how to index candidate tuples, its direction, and its value for two vectors.

    ``pair(a[N, d], b[C, d]) -> [N, C]`` scores single items against single items (zero-shot
    classification against class prompts): the 2-vector volume is ``sin`` of the angle, the
    2-corner "triangle" is the segment between the endpoints, the 2-vector multilinear
    product is the dot product, the largest singular value of two unit vectors ``sqrt(1 + |cos|)``.
    """

    name: str
    index: Callable[..., object]
    higher_is_better: bool
    pair: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    tuple_size: int | None = None  # the number of candidate vectors the score needs, if fixed
    once: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None  # search without building an index

    def search_once(self, queries: torch.Tensor, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best of ``candidates [n, m, d]`` (all present) per query, scored once: ``(scores, indices)``.

        For candidates streamed past a batch of queries (an index on disk): where building
        the score's index costs more than it saves, a one-pass form runs instead.
        """
        if self.once is not None:
            return self.once(queries, candidates, k)
        return self.index(candidates).search(queries, k=k)


#: The scores a model may be trained with, by name.
SCORES: dict[str, Score] = {
    "volume": Score("volume", VolumeIndex.build, False, _pair_volume, once=volume_search_once),
    "area": Score("area", AreaIndex.build, False, lambda a, b: torch.cdist(a.float(), b.float()), tuple_size=2),
    "mip": Score("mip", lambda c, mask=None: ProductIndex.build(c, mask, "mip"), True, _dot),
    "cosine": Score("cosine", lambda c, mask=None: ProductIndex.build(c, mask, "cosine"), True, _dot),
    "singular": Score("singular", SingularIndex.build, True, _pair_singular),
}


def score_matrix(name: str, q: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[Nq, Nc]`` scores of ``q[Nq, d]`` against tuples ``c[Nc, m, d]`` by the score ``name``."""
    index = SCORES[name].index(c, mask)
    return index.scores(q)
