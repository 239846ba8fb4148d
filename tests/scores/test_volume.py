"""Gram volume math (gramx.scores.volume) against a float64 ``sqrt(det(X X^T))`` reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gramx
from gramx.scores.topk import merge_topk
from gramx.scores.volume import VolumeIndex, gram_volume, volume_matrix, volume_topk


def reference_volume(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sqrt(det(X X^T))`` in float64; missing vectors (mask False) are dropped one by one."""
    x = x.detach().to(torch.float64)
    if mask is None:
        return torch.linalg.det(x @ x.transpose(-1, -2)).clamp(min=0).sqrt()
    flat_x = x.reshape(-1, *x.shape[-2:])
    flat_m = mask.reshape(-1, mask.shape[-1])
    out = [reference_volume(v[m]) if m.any() else torch.tensor(1.0, dtype=torch.float64) for v, m in zip(flat_x, flat_m)]
    return torch.stack(out).reshape(mask.shape[:-1])


def unit(*shape, dtype=torch.float64, generator=None) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=torch.float64, generator=generator), dim=-1).to(dtype)


def small_volume_pairs(n: int, d: int, vol: float, gen: torch.Generator) -> torch.Tensor:
    """``[n, 2, d]`` float32 unit-vector pairs at angle ``asin(vol)``: volume ``vol``."""
    u = unit(n, d, generator=gen)
    w = torch.randn(n, d, dtype=torch.float64, generator=gen)
    w = F.normalize(w - (w * u).sum(-1, keepdim=True) * u, dim=-1)
    v = (1 - vol**2) ** 0.5 * u + vol * w
    return torch.stack([u, v], dim=1).float()


def naive_volume_matrix(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """All-pairs determinant form, float64: ``[Nq, Nc, m+1, d]`` tuples, then ``sqrt(det)``."""
    nq, nc = q.shape[0], c.shape[0]
    tuples = torch.cat([q[:, None, None, :].expand(nq, nc, 1, q.shape[1]), c[None].expand(nq, *c.shape)], dim=2)
    return reference_volume(tuples)


pytestmark = pytest.mark.usefixtures("one_thread")  # these tensors are tiny: one thread avoids OpenMP waits


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# --------------------------------------------------------------------------- gram_volume


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("batch", [(), (7,), (3, 5)])
def test_gram_volume_matches_sqrt_det(dtype, k, batch, gen):
    x = unit(*batch, k, 64, dtype=dtype, generator=gen)
    vol = gram_volume(x)
    assert vol.shape == batch
    assert vol.dtype == dtype
    ref = reference_volume(x)
    assert ref.min() > 0.3, "the inputs should be well conditioned"
    torch.testing.assert_close(vol.double(), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("d", [6, 512])
def test_gram_volume_high_dim_and_tight_dims(d, gen):
    x = unit(50, 6, d, dtype=torch.float32, generator=gen)
    ref = reference_volume(x)
    keep = ref > 0.05  # d=6 has some poorly conditioned 6-tuples; check the rest to 1e-6
    assert keep.sum() > 10
    torch.testing.assert_close(gram_volume(x).double()[keep], ref[keep], rtol=1e-6, atol=0)


def test_k1_is_the_norm(gen):
    x = torch.randn(10, 1, 16, generator=gen, dtype=torch.float64) * 3
    torch.testing.assert_close(gram_volume(x), x[:, 0].norm(dim=-1))


def test_k2_unit_vectors_is_sine_of_the_angle(gen):
    angles = torch.linspace(0.05, 3.09, 20, dtype=torch.float64)
    u = unit(20, 8, generator=gen)
    w = torch.randn(20, 8, dtype=torch.float64, generator=gen)
    w = F.normalize(w - (w * u).sum(-1, keepdim=True) * u, dim=-1)
    v = angles.cos()[:, None] * u + angles.sin()[:, None] * w
    torch.testing.assert_close(gram_volume(torch.stack([u, v], 1)), angles.sin())


def test_invariant_under_rotation_and_permutation(gen):
    x = unit(20, 4, 32, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64, generator=gen))
    vol = gram_volume(x)
    torch.testing.assert_close(gram_volume(x @ rotation.T), vol)
    for _ in range(3):
        perm = torch.randperm(4, generator=gen)
        torch.testing.assert_close(gram_volume(x[:, perm]), vol)


def test_scaling_one_vector_scales_the_volume(gen):
    x = unit(5, 3, 16, generator=gen)
    y = x.clone()
    y[:, 1] *= 2.5
    torch.testing.assert_close(gram_volume(y), 2.5 * gram_volume(x))


def test_mask_equals_dropping_the_vector(gen):
    x = unit(40, 5, 24, generator=gen)
    mask = torch.rand(40, 5, generator=gen) > 0.4
    mask[0] = False  # all missing -> 1
    mask[1] = True
    vol = gram_volume(x, mask=mask)
    torch.testing.assert_close(vol, reference_volume(x, mask))
    assert vol[0].item() == 1.0
    # dropping one vector explicitly, by hand
    m = torch.ones(40, 5, dtype=torch.bool)
    m[:, 2] = False
    torch.testing.assert_close(gram_volume(x, mask=m), gram_volume(x[:, [0, 1, 3, 4]]))


def test_mask_ignores_garbage_in_missing_slots(gen):
    x = unit(10, 3, 8, generator=gen)
    mask = torch.tensor([True, False, True]).expand(10, 3)
    y = x.clone()
    y[:, 1] = float("nan")
    torch.testing.assert_close(gram_volume(y, mask=mask), gram_volume(x[:, [0, 2]]))


def test_mask_shape_is_checked():
    with pytest.raises(ValueError, match="mask"):
        gram_volume(torch.randn(4, 3, 8), mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError):
        gram_volume(torch.randn(8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32_close_to_reference(dtype, gen):
    x = unit(30, 4, 64, dtype=dtype, generator=gen)
    vol = gram_volume(x)
    assert vol.dtype == torch.float32
    # the reference sees the same (rounded) half-precision inputs
    torch.testing.assert_close(vol.double(), reference_volume(x), rtol=1e-5, atol=0)


@pytest.mark.parametrize("vol", [1e-6, 1e-5, 1e-4])
def test_small_volumes_survive_bf16_autocast(vol, gen):
    x = small_volume_pairs(64, 512, vol, gen)
    ref = reference_volume(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gram_volume(x)
        # What the official GRAM code does: a Gram matrix from autocast (bf16) products,
        # then det. At these volumes it loses everything; gramx must not.
        # (bf16 matmuls are slow on CPUs without bf16 units: 8 pairs make the point)
        naive = torch.linalg.det((x[:8] @ x[:8].transpose(-1, -2)).float()).abs().sqrt()
    assert got.dtype == torch.float32
    # float32 Gram-Schmidt with reorthogonalisation keeps ~1e-9 absolute (1e-8 with margin)
    torch.testing.assert_close(got.double(), ref, rtol=1e-8 / vol, atol=0)
    assert ((naive.double() - ref[:8]).abs() / ref[:8]).median() > 0.5


def test_small_volumes_in_volume_matrix_float64(gen):
    # volume_matrix computes vol^2 = |q|^2 - |U^T q|^2, which cancels for near-matches:
    # the absolute error of vol^2 is ~eps, so a 1e-6 volume keeps ~eps / 1e-12 = 2e-4.
    x = small_volume_pairs(16, 32, 1e-6, gen).double()
    got = volume_matrix(x[:, 0], x[:, 1:])
    torch.testing.assert_close(got.diagonal(), reference_volume(x), rtol=2e-3, atol=0)
    x = small_volume_pairs(16, 32, 1e-4, gen).double()
    got = volume_matrix(x[:, 0], x[:, 1:])
    torch.testing.assert_close(got.diagonal(), reference_volume(x), rtol=1e-6, atol=0)


def test_gradcheck_gram_volume(gen):
    x = unit(3, 4, 7, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(gram_volume, (x,))
    mask = torch.tensor([[True, True, False, True], [True, False, True, True], [True, True, True, True]])
    assert torch.autograd.gradcheck(lambda v: gram_volume(v, mask=mask), (x,))


def test_gradcheck_volume_matrix(gen):
    q = unit(4, 6, generator=gen).requires_grad_()
    c = unit(5, 3, 6, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(volume_matrix, (q, c))
    mask = torch.rand(5, 3, generator=gen) > 0.3
    mask[:, 0] = True
    assert torch.autograd.gradcheck(lambda a, b: volume_matrix(a, b, mask=mask), (q, c))


def test_gradient_matches_the_reference_gradient(gen):
    x = unit(6, 3, 10, generator=gen).requires_grad_()
    (g,) = torch.autograd.grad(gram_volume(x).sum(), x)
    xr = x.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(torch.linalg.det(xr @ xr.transpose(-1, -2)).sqrt().sum(), xr)
    torch.testing.assert_close(g, gr)


# ------------------------------------------------------------------- degenerate tuples


def degenerate_tuples(dtype, gen):
    u, w, z = unit(3, 16, generator=gen)
    inside = F.normalize(0.6 * u + 0.8 * w, dim=0)
    return {
        "identical": torch.stack([u, u, w]),
        "all identical": torch.stack([u, u, u]),
        "collinear": torch.stack([u, -u, w]),
        "in span": torch.stack([u, w, inside]),
        "zero vector": torch.stack([u, torch.zeros_like(u), w]),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_tuples_have_zero_volume_and_finite_gradients(dtype, gen):
    for name, t in degenerate_tuples(dtype, gen).items():
        x = t.to(dtype).requires_grad_()
        vol = gram_volume(x)
        (grad,) = torch.autograd.grad(vol, x)
        assert torch.isfinite(vol), name
        assert vol.abs().item() < 1e-6, name
        assert torch.isfinite(grad).all(), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_volume_matrix_degenerate_candidates_and_queries_in_span(dtype, gen):
    u, w, z = unit(3, 16, generator=gen)
    inside = F.normalize(0.6 * u + 0.8 * w, dim=0)
    q = torch.stack([u, inside, z]).to(dtype).requires_grad_()
    c = torch.stack(
        [
            torch.stack([u, w]),  # u and `inside` lie in its span
            torch.stack([u, u]),  # zero-volume candidate
            torch.stack([w, -w]),  # collinear
            torch.stack([z, w]),
        ]
    ).to(dtype).requires_grad_()
    vol = volume_matrix(q, c)
    ref = naive_volume_matrix(q.detach().double(), c.detach().double())
    assert torch.isfinite(vol).all()
    # q in span: |q|^2 - |U^T q|^2 cancels, so float32 keeps ~sqrt(eps) absolute accuracy
    atol = 1e-3 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(vol.double(), ref, rtol=0, atol=atol)
    assert vol[0, 0].abs() < atol and vol[1, 0].abs() < atol and vol[2, 3].abs() < atol
    assert (vol[:, 1:3].abs() < atol).all()
    gq, gc = torch.autograd.grad(vol.sum(), (q, c))
    assert torch.isfinite(gq).all() and torch.isfinite(gc).all()


@pytest.mark.parametrize("offset", [0.0, 1e-5, 1e-4, 1e-3])
def test_volume_matrix_gradient_bounded_near_the_span(offset, gen):
    """vol(q, C) = vol(C) |q - U U^T q| has a gradient of norm vol(C) <= 1 in q.

    In float32 |q|^2 - |U^T q|^2 is rounding noise for near-matches: the backward must not
    divide by that noise (it did: gradients ~1e3 x too large at offset 1e-4).
    """
    u, w, z = unit(3, 64, generator=gen)
    z = F.normalize(z - (z @ u) * u - (z @ w) * w, dim=0)
    c = torch.stack([u, w])[None].float()
    for t in torch.linspace(0, 1, 7, dtype=torch.float64):
        q = F.normalize((1 - t) * u + t * w + offset * z, dim=0)[None].float().requires_grad_()
        (g,) = torch.autograd.grad(volume_matrix(q, c).sum(), q)
        assert torch.isfinite(g).all()
        assert g.norm() < 1.5


# --------------------------------------------------------------------- volume_matrix


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_volume_matrix_equals_all_pairs_determinants(m, dtype, gen):
    q = unit(9, 20, dtype=dtype, generator=gen)
    c = unit(13, m, 20, dtype=dtype, generator=gen)
    vol = volume_matrix(q, c)
    assert vol.shape == (9, 13) and vol.dtype == dtype
    torch.testing.assert_close(vol.double(), naive_volume_matrix(q, c), rtol=1e-5, atol=1e-6)


def test_volume_matrix_chunking_gives_the_same_result(gen):
    q = unit(7, 16, generator=gen)
    c = unit(23, 3, 16, generator=gen)
    full = volume_matrix(q, c)
    for block in [1, 5, 21, 22, 100, 10_000]:
        torch.testing.assert_close(volume_matrix(q, c, block_elements=block), full, rtol=0, atol=1e-14)


def test_volume_matrix_with_mask_equals_dropping_vectors(gen):
    q = unit(5, 12, generator=gen)
    c = unit(8, 3, 12, generator=gen)
    mask = torch.rand(8, 3, generator=gen) > 0.5
    mask[0] = False  # no candidate vector: the volume of q alone = |q| = 1
    mask[1] = True
    vol = volume_matrix(q, c, mask=mask)
    for j in range(8):
        expected = naive_volume_matrix(q, c[j : j + 1, mask[j]]) if mask[j].any() else q.norm(dim=1, keepdim=True)
        torch.testing.assert_close(vol[:, j : j + 1], expected)


def test_volume_matrix_half_inputs_and_autocast(gen):
    q = unit(6, 32, generator=gen)
    c = unit(10, 3, 32, generator=gen)
    ref = volume_matrix(q, c)
    got = volume_matrix(q.half(), c.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_volume_matrix(q.half(), c.bfloat16()), rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = volume_matrix(q.float(), c.float())
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto.double(), ref, rtol=1e-5, atol=1e-5)


def test_volume_matrix_checks_shapes():
    with pytest.raises(ValueError):
        volume_matrix(torch.randn(3, 8), torch.randn(4, 8))
    with pytest.raises(ValueError):
        volume_matrix(torch.randn(3, 7), torch.randn(4, 2, 8))


def test_top_level_api_is_the_volume_module():
    assert gramx.gram_volume is gram_volume
    assert gramx.volume_matrix is volume_matrix


# ------------------------------------------------------------------------ top-k search


def test_volume_topk_and_index_search_equal_a_full_sort(gen):
    q = unit(11, 16, generator=gen)
    c = unit(57, 2, 16, generator=gen)
    full = volume_matrix(q, c)
    expected_vals, expected_idx = full.sort(dim=1)
    for block in [16, 100, 10_000]:
        vals, idx = volume_topk(q, c, k=10, block_elements=block)
        assert vals.shape == idx.shape == (11, 10)
        torch.testing.assert_close(vals, expected_vals[:, :10])
        assert torch.equal(idx, expected_idx[:, :10])
    index = VolumeIndex.build(c)
    assert len(index) == 57
    vals, idx = index.search(q, k=5, block_elements=40)
    torch.testing.assert_close(vals, expected_vals[:, :5])
    assert torch.equal(idx, expected_idx[:, :5])
    # k larger than the collection: everything, sorted
    vals, idx = index.search(q, k=100)
    assert idx.shape == (11, 57)
    assert torch.equal(idx, expected_idx)


def test_index_volumes_equal_volume_matrix_and_masks(gen):
    q = unit(4, 16, generator=gen)
    c = unit(9, 3, 16, generator=gen)
    mask = torch.rand(9, 3, generator=gen) > 0.3
    index = VolumeIndex.build(c, mask)
    torch.testing.assert_close(index.volumes(q), volume_matrix(q, c, mask=mask))
    torch.testing.assert_close(index.volume, reference_volume(c, mask))
    vals, idx = index.search(q, k=3)
    torch.testing.assert_close(vals, volume_matrix(q, c, mask=mask).sort(dim=1).values[:, :3])


def test_blocked_in_place_build_equals_the_autograd_build(gen):
    c = unit(37, 3, 16, generator=gen)
    mask = torch.rand(37, 3, generator=gen) > 0.3
    for m in [None, mask]:
        blocked = VolumeIndex.build(c, m, block_elements=100)  # two tuples per block
        graph = VolumeIndex.build(c.clone().requires_grad_(), m)
        torch.testing.assert_close(blocked.basis, graph.basis.detach())
        torch.testing.assert_close(blocked.volume, graph.volume.detach())
    x = unit(4, 5, 3, 16, generator=gen)
    m = torch.rand(4, 5, 3, generator=gen) > 0.3
    torch.testing.assert_close(gram_volume(x, m), gram_volume(x.clone().requires_grad_(), m).detach())


def test_merge_topk_of_shards_equals_global_topk(gen):
    q = unit(6, 16, generator=gen)
    c = unit(50, 3, 16, generator=gen)
    full_vals, full_idx = volume_matrix(q, c).sort(dim=1)
    bounds = [0, 7, 8, 30, 50]  # uneven shards, one with a single candidate (fewer than k)
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        vals, idx = VolumeIndex.build(c[start:stop]).search(q, k=4)
        parts.append((vals, idx + start))
    vals, idx = merge_topk(parts, k=4)
    torch.testing.assert_close(vals, full_vals[:, :4])
    assert torch.equal(idx, full_idx[:, :4])


def test_score_dtype_is_checked_and_cpu_scoring_stays_float32():
    c = F.normalize(torch.randn(30, 2, 16, dtype=torch.float64), dim=-1)
    q = F.normalize(torch.randn(5, 16, dtype=torch.float64), dim=-1)
    with pytest.raises(ValueError, match="score_dtype"):
        VolumeIndex.build(c.float(), score_dtype=torch.float64)
    # without the fused CUDA kernel a half score_dtype changes nothing
    plain, half = VolumeIndex.build(c.float()), VolumeIndex.build(c.float(), score_dtype=torch.bfloat16)
    torch.testing.assert_close(half.volumes(q.float()), plain.volumes(q.float()), rtol=0, atol=0)
