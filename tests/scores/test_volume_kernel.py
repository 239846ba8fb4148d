"""The fused Triton volume kernel against the float64 reference and the PyTorch path.

On a CUDA machine the kernel runs compiled. Elsewhere, when Triton is installed, the same
tests run on CPU tensors through Triton's interpreter, in a child pytest started with
``TRITON_INTERPRET=1`` (Triton reads it when its language module is first imported, so it
cannot be switched on inside a process that already imported Triton). Without Triton these
tests skip: the kernel is an optional fast path.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from gramx.scores import volume_kernel
from gramx.scores.volume import VolumeIndex, gram_volume

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def device():
    """``cuda`` when available, else ``cpu`` inside the interpreted child run."""
    if INTERPRETED:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip("no CUDA: test_kernel_under_the_interpreter runs this under TRITON_INTERPRET=1")


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED or torch.cuda.is_available(), reason="runs the CPU-only interpreted child")
def test_kernel_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def _tuples(n: int, m: int, d: int, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, m, d, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def _reference(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float64 ``sqrt(det)`` of every (query, candidate tuple) through the Gram-Schmidt form."""
    nq, nc = q.shape[0], c.shape[0]
    tuples = torch.cat([q[:, None, None, :].expand(nq, nc, 1, -1), c[None].expand(nq, nc, -1, -1)], dim=2)
    return gram_volume(tuples.double())


@pytest.mark.parametrize("m", [1, 2, 3])
def test_fused_volumes_match_float64(device, m):
    g = torch.Generator().manual_seed(m)
    q, c = _tuples(37, 1, 40, g)[:, 0], _tuples(53, m, 40, g)  # sizes off the 16-wide tiles
    if m > 1:
        c[5, -1] = c[5, 0]  # a degenerate candidate: volume 0 for every query
    index = VolumeIndex.build(c.float().to(device))
    out = volume_kernel.fused_volumes(q.float().to(device), index.basis, index.volume)
    ref = _reference(q, c)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert torch.linalg.norm(out.double().cpu() - ref) / torch.linalg.norm(ref) < 1e-5
    if m > 1:
        assert out[:, 5].abs().max() < 1e-3


def test_fused_volumes_low_precision(device):
    """Tensor-core inputs (fp16 here; bf16 takes the same code) accumulate in float32."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16  # the interpreter lacks bf16 dots
    g = torch.Generator().manual_seed(7)
    q, c = _tuples(40, 1, 64, g)[:, 0], _tuples(70, 3, 64, g)
    index = VolumeIndex.build(c.float().to(device))
    out = volume_kernel.fused_volumes(q.to(dtype).to(device), index.basis.to(dtype), index.volume)
    ref = _reference(q, c)
    assert torch.linalg.norm(out.double().cpu() - ref) / torch.linalg.norm(ref) < 1e-2


def test_fused_volumes_write_into_a_slice(device):
    g = torch.Generator().manual_seed(3)
    q, c = _tuples(20, 1, 32, g)[:, 0].float().to(device), _tuples(30, 2, 32, g).float().to(device)
    index = VolumeIndex.build(c)
    big = torch.full((20, 50), float("nan"), device=device)
    volume_kernel.fused_volumes(q, index.basis, index.volume, out=big[:, 10:40])
    assert torch.isnan(big[:, :10]).all() and torch.isnan(big[:, 40:]).all()  # nothing outside the slice
    torch.testing.assert_close(big[:, 10:40], volume_kernel.fused_volumes(q, index.basis, index.volume))


def test_index_uses_the_kernel_and_agrees_with_pytorch(device, monkeypatch):
    g = torch.Generator().manual_seed(11)
    q, c = _tuples(24, 1, 48, g)[:, 0].float().to(device), _tuples(90, 3, 48, g).float().to(device)
    mask = torch.ones(90, 3, dtype=torch.bool, device=device)
    mask[::7, 1] = False  # candidates with a missing member
    index = VolumeIndex.build(c, mask)
    calls = []
    real = volume_kernel.fused_volumes
    monkeypatch.setattr("gramx.scores.volume.fused_volumes", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused = index.volumes(q)
    fused_top = index.search(q, k=5, block_elements=24 * 3 * 32)  # several chunks
    assert calls, "the fused kernel was not used"
    monkeypatch.setenv("GRAMX_FUSED_VOLUME", "0")
    plain = index.volumes(q)
    plain_top = index.search(q, k=5, block_elements=24 * 3 * 32)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_top[0], plain_top[0], rtol=1e-5, atol=1e-5)
    assert (fused_top[1] == plain_top[1]).float().mean() > 0.95  # near-ties may swap


def test_score_dtype_opts_into_half_precision(device):
    half = torch.bfloat16 if device.type == "cuda" else torch.float16  # the interpreter lacks bf16 dots
    g = torch.Generator().manual_seed(17)
    q, c = _tuples(24, 1, 48, g)[:, 0], _tuples(40, 3, 48, g)
    ref = _reference(q, c)
    q, c = q.float().to(device), c.float().to(device)
    exact = VolumeIndex.build(c)
    # half-precision queries alone keep float32 scoring, as the volume contract says
    torch.testing.assert_close(exact.volumes(q.to(half)), exact.volumes(q.to(half).float()))
    fast = VolumeIndex.build(c, score_dtype=half)
    error = torch.linalg.norm(fast.volumes(q).double().cpu() - ref) / torch.linalg.norm(ref)
    assert 1e-6 < error < 1e-2  # scored in half precision, yet close


def test_gradients_bypass_the_kernel(device, monkeypatch):
    monkeypatch.setattr("gramx.scores.volume.fused_volumes", lambda *a, **k: pytest.fail("kernel used under autograd"))
    g = torch.Generator().manual_seed(5)
    q = _tuples(4, 1, 16, g)[:, 0].float().to(device).requires_grad_()
    index = VolumeIndex.build(_tuples(6, 2, 16, g).float().to(device))
    index.volumes(q).sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason="the autotuned tiles run on CUDA only")
def test_autotuned_kernel_agrees_with_pytorch(monkeypatch):
    """A problem above SMALL_PROBLEM goes through the autotuned configurations."""
    g = torch.Generator().manual_seed(13)
    q, c = _tuples(256, 1, 128, g)[:, 0].float().cuda(), _tuples(20000, 3, 128, g).float().cuda()
    assert q.shape[0] * c.shape[0] >= volume_kernel.SMALL_PROBLEM
    index = VolumeIndex.build(c)
    fused = volume_kernel.fused_volumes(q, index.basis, index.volume)
    monkeypatch.setenv("GRAMX_FUSED_VOLUME", "0")
    torch.testing.assert_close(fused, index.volumes(q), rtol=1e-5, atol=1e-5)
