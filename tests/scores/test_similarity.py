"""Triangle area, multilinear product and their indexes against independent float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from symile import MIPSimilarity

from gramx import gram_volume
from gramx.scores.similarity import (
    SCORES,
    AreaIndex,
    ProductIndex,
    SingularIndex,
    area_matrix,
    mip_matrix,
    multilinear_product,
    score_matrix,
    triangle_area,
)


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def lagrange_area(q, b, c):
    """Half the norm of the 2-vector wedge of the triangle's sides, from Lagrange's identity."""
    u, v = b - q, c - q
    return ((u @ u) * (v @ v) - (u @ v) ** 2).clamp(min=0).sqrt() / 2


def triangle_area_computation(language, video, audio):
    """TRIANGLE's utils/area.py (ispamm/TRIANGLE), written out: their area without the square root."""
    u = language.unsqueeze(1) - video.unsqueeze(0)
    v = language.unsqueeze(1) - audio.unsqueeze(0)
    return ((u ** 2).sum(2) * (v ** 2).sum(2) - (u * v).sum(2) ** 2) / 2


def test_triangle_area_equals_the_geometry_and_triangles_formula():
    x = unit(50, 3, 16)
    ours = triangle_area(x)
    reference = torch.stack([lagrange_area(*t) for t in x])
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    # a right isosceles triangle with legs of length 1, and the degenerate one
    corners = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(triangle_area(corners), torch.tensor([0.5, 0.0]))
    # TRIANGLE's training quantity is 2 * area^2, for every query against every candidate pair
    t, v, a = unit(8, 16, seed=1), unit(8, 16, seed=2), unit(8, 16, seed=3)
    theirs = triangle_area_computation(t, v, a)
    torch.testing.assert_close(area_matrix(t, torch.stack([v, a], dim=1), squared=True), theirs)
    torch.testing.assert_close(2 * area_matrix(t, torch.stack([v, a], dim=1)) ** 2, theirs)


def test_the_area_sees_a_vectors_sign_the_volume_does_not():
    x = unit(1, 3, 8)[0]
    flipped = torch.stack([x[0], x[1], -x[2]])
    assert torch.isclose(gram_volume(x), gram_volume(flipped))
    assert not torch.isclose(triangle_area(x), triangle_area(flipped))


def test_area_index_scores_and_searches_in_chunks():
    q, c = unit(7, 12, seed=4), unit(300, 2, 12, seed=5)
    full = torch.stack([torch.stack([lagrange_area(qi, *cj) for cj in c]) for qi in q])
    index = AreaIndex.build(c)
    torch.testing.assert_close(index.scores(q, block_elements=64), full)
    values, idx = index.search(q, k=5, block_elements=64)  # many chunks, a running top-5
    best = full.topk(5, dim=1, largest=False)
    torch.testing.assert_close(values, best.values)
    assert torch.equal(idx, best.indices)
    with pytest.raises(ValueError, match="all three corners"):
        AreaIndex.build(c, mask=torch.tensor([[True, False]] * 300))


def test_multilinear_product_matches_symile_and_drops_missing_vectors():
    q, c = unit(5, 10, seed=6), unit(40, 2, 10, seed=7)
    ours = mip_matrix(q, c)
    torch.testing.assert_close(ours, torch.einsum("qd,cd,cd->qc", q, c[:, 0], c[:, 1]))
    # symile's MIPSimilarity: the query's modalities multiplied, against one candidate modality
    torch.testing.assert_close(ours.T, MIPSimilarity()(q, [c[:, 0], c[:, 1]]))
    mask = torch.ones(40, 2, dtype=torch.bool)
    mask[::3, 1] = False
    masked = mip_matrix(q, c, mask)
    torch.testing.assert_close(masked[:, ::3], q @ c[::3, 0].T)  # without its second vector: a dot product
    torch.testing.assert_close(multilinear_product(torch.stack([q, q], dim=1)), (q * q).sum(-1))
    values, idx = ProductIndex.build(c).search(q, k=3, block_elements=10)
    assert torch.equal(idx, ours.topk(3, dim=1).indices)


def test_singular_scores_are_the_largest_singular_values_of_query_and_tuple():
    q, c = unit(4, 8, seed=13), unit(6, 2, 8, seed=14)
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[::2, 1] = False
    expected = torch.tensor([[torch.linalg.svdvals(torch.stack([qi, *cj[mj]], dim=1))[0] for cj, mj in zip(c, mask)]
                             for qi in q], dtype=torch.float64)
    torch.testing.assert_close(SingularIndex.build(c, mask).scores(q, block_elements=10), expected)
    torch.testing.assert_close(SCORES["singular"].pair(q, c[:, 0]), (1 + (q @ c[:, 0].T).abs()).sqrt().float())
    qg = q.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: SingularIndex.build(c, mask).scores(x), (qg,))


def test_every_score_indexes_and_ranks_the_same_way():
    q, c = unit(6, 8, seed=8), unit(50, 2, 8, seed=9)
    for name, score in SCORES.items():
        scores = score_matrix(name, q, c)
        values, idx = score.index(c).search(q, k=4)
        assert torch.equal(idx, scores.topk(4, dim=1, largest=score.higher_is_better).indices), name
    torch.testing.assert_close(score_matrix("cosine", q, c), q @ c[:, 0].T + q @ c[:, 1].T)


@pytest.mark.parametrize("fn", [lambda x: triangle_area(x), lambda x: triangle_area(x, squared=True),
                                lambda x: multilinear_product(x)])
def test_gradients_pass_gradcheck(fn):
    x = unit(4, 3, 5, seed=10).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,))
    q = unit(3, 5, seed=11).requires_grad_(True)
    c = unit(4, 2, 5, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: area_matrix(a, b), (q, c))
