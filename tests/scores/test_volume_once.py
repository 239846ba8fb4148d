"""Volume retrieval over candidates scored once: the same ranking and volumes as a VolumeIndex."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gramx.scores.similarity import SCORES
from gramx.scores import volume_once
from gramx.scores.volume import VolumeIndex
from gramx.scores.volume_once import volume_search_once


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def aligned(n, m, d, spread, seed=0):
    """Tuples whose vectors lie close to a shared direction, as a trained model's do."""
    centre = unit(n, 1, d, seed=seed)
    return F.normalize(centre + spread * unit(n, m, d, seed=seed + 1), dim=-1)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("spread", [2.0, 0.5, 0.1])
def test_equals_the_index_and_float64(m, spread):
    candidates, queries = aligned(600, m, 64, spread), unit(40, 64, seed=9)
    values, indices = volume_search_once(queries, candidates, k=7)
    want_values, _ = VolumeIndex.build(candidates).search(queries, k=7)
    exact = VolumeIndex.build(candidates.double()).volumes(queries.double())
    torch.testing.assert_close(values, want_values, rtol=0, atol=3e-6)
    torch.testing.assert_close(values.double(), exact.sort(dim=1).values[:, :7], rtol=0, atol=3e-6)
    torch.testing.assert_close(exact.gather(1, indices), values.double(), rtol=0, atol=3e-6)  # the rows it names


def test_blocks_do_not_change_the_result():
    candidates, queries = unit(500, 3, 32), unit(20, 32, seed=3)
    whole = volume_search_once(queries, candidates, k=5)
    blocked = volume_search_once(queries, candidates, k=5, block_elements=20 * 3 * 7)
    assert torch.equal(whole[1], blocked[1])
    torch.testing.assert_close(whole[0], blocked[0], rtol=0, atol=1e-6)


def test_cache_sized_blocks_do_not_change_the_result(monkeypatch):
    candidates, queries = unit(500, 2, 32), unit(20, 32, seed=3)
    whole = volume_search_once(queries, candidates, k=5)
    monkeypatch.setattr(volume_once, "CACHE_ELEMENTS", 2 * 32 * 9)  # blocks of 9 candidates
    blocked = volume_search_once(queries, candidates, k=5)
    assert torch.equal(whole[1], blocked[1])
    torch.testing.assert_close(whole[0], blocked[0], rtol=0, atol=1e-6)


def test_dependent_vectors_have_volume_zero_as_in_the_index():
    vectors = unit(6, 32)
    candidates = torch.stack([vectors, vectors, unit(6, 32, seed=1)], dim=1)
    candidates[0, 2] = 0  # a zero vector: dependent too
    values, _ = volume_search_once(unit(3, 32, seed=2), candidates, k=6)
    assert torch.count_nonzero(values) == 0
    assert VolumeIndex.build(candidates).volumes(unit(3, 32, seed=2)).max() < 1e-6


def test_strided_candidates_and_fewer_than_k():
    layout = unit(3, 5, 16)  # modality-major, as an index reads them
    values, indices = volume_search_once(unit(2, 16, seed=4), layout.transpose(0, 1), k=10)
    assert values.shape == indices.shape == (2, 5)
    torch.testing.assert_close(values, VolumeIndex.build(layout.transpose(0, 1).contiguous())
                               .search(unit(2, 16, seed=4), k=5)[0], rtol=0, atol=1e-6)


def test_the_volume_score_searches_once_through_it_and_others_through_their_index():
    candidates, queries = unit(50, 2, 16), unit(4, 16, seed=5)
    assert SCORES["volume"].once is volume_search_once
    for name in ("area", "mip", "singular"):
        got = SCORES[name].search_once(queries, candidates, 3)
        want = SCORES[name].index(candidates).search(queries, k=3)
        assert torch.equal(got[1], want[1])


def test_cosine_over_one_modality_scores_the_candidates_themselves():
    candidates, queries = unit(50, 1, 16), unit(4, 16, seed=6)
    index = SCORES["cosine"].index(candidates)
    assert index.vectors.data_ptr() == candidates.data_ptr()  # a view: no copy of a streamed chunk
    values, indices = SCORES["cosine"].search_once(queries, candidates, 3)
    want = (queries @ candidates[:, 0].T).topk(3, dim=1)
    assert torch.equal(indices, want.indices)
    torch.testing.assert_close(values, want.values)
