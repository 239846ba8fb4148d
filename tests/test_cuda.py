"""GPU checks (marker `cuda`): skipped on machines without CUDA, run by scripts/gpu-check.sh."""

import os

import torch
import torch.nn.functional as F
import pytest

import gramx
from gramx.losses.contrastive import GramLoss

pytestmark = pytest.mark.cuda


def _unit(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _reference(x):
    x = x.double().cpu()
    return torch.linalg.det(x @ x.transpose(-1, -2)).clamp(min=0).sqrt()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_volume_on_cuda_matches_float64_reference(dtype):
    x = _unit(64, 4, 512)
    got = gramx.gram_volume(x.to("cuda", dtype)).cpu().double()
    torch.testing.assert_close(got, _reference(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_volume_matrix_on_cuda_matches_float64_reference(dtype):
    q, c = _unit(50, 256, seed=1), _unit(300, 3, 256, seed=2)
    got = gramx.volume_matrix(q.to("cuda", dtype), c.to("cuda", dtype), block_elements=4096).cpu().double()
    full = torch.cat([q[:, None, None].expand(50, 300, 1, 256), c[None].expand(50, 300, 3, 256)], dim=2)
    torch.testing.assert_close(got, _reference(full), rtol=1e-6, atol=0)


def test_degenerate_gradients_finite_under_bf16_autocast():
    base = _unit(8, 512, dtype=torch.float32).cuda()
    x = torch.stack([base, base, base.roll(1, 0)], dim=1).requires_grad_(True)  # two identical vectors
    with torch.autocast("cuda", dtype=torch.bfloat16):
        vol = gramx.gram_volume(x)
        vm = gramx.volume_matrix(base, x)
    assert vol.dtype == torch.float32 and vol.abs().max() < 1e-3
    (vol.sum() + vm.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_small_volumes_survive_bf16_autocast():
    a = _unit(16, 512, dtype=torch.float32, seed=3).cuda()
    b = F.normalize(a + 1e-4 * _unit(16, 512, dtype=torch.float32, seed=4).cuda(), dim=-1)
    x = torch.stack([a, b], dim=1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        vol = gramx.gram_volume(x)
    ref = _reference(x).float().cuda()
    assert (ref > 1e-5).all()
    torch.testing.assert_close(vol, ref, rtol=1e-2, atol=1e-6)


def test_gram_loss_forward_backward_on_cuda_equals_cpu():
    feats = {m: _unit(64, 128, dtype=torch.float32, seed=i) for i, m in enumerate(["text", "audio", "video", "subtitles"])}
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        loss_fn = GramLoss(anchor="text").to(device)
        inputs = {m: x.to(device).detach().requires_grad_(True) for m, x in feats.items()}
        loss = loss_fn(inputs)
        loss.backward()
        results.append((loss.detach().cpu(), {m: x.grad.cpu() for m, x in inputs.items()}))
    (cpu_loss, cpu_grads), (gpu_loss, gpu_grads) = results
    torch.testing.assert_close(gpu_loss, cpu_loss, rtol=1e-5, atol=1e-6)
    for m in feats:
        torch.testing.assert_close(gpu_grads[m], cpu_grads[m], rtol=1e-4, atol=1e-6)


def test_digits_training_on_cuda_with_bf16_beats_chance(tmp_path):
    from pathlib import Path

    from gramx.train.config import load_config
    from gramx.evaluate.report import evaluate
    from gramx.model.model import load_model
    from gramx.train.loop import train

    examples = Path(__file__).resolve().parent.parent / "examples"
    overrides = [
        "device=cuda", "optim.amp=bf16", "optim.epochs=2", "data.val=null", "eval.metrics=[retrieval]",
        f"output.dir={tmp_path / 'run'}", "logging.progress=false", "logging.tensorboard=false",
    ]
    # a machine without the MiniLM package (the lent GPU's image) names another text model
    # directory here; scripts/gpu-check.sh makes a small randomly initialised one
    if os.environ.get("GRAMX_TEXT_MODEL"):
        overrides.append(f"modalities.text.options.model={os.environ['GRAMX_TEXT_MODEL']}")
    config = load_config(examples / "digits.yaml", overrides)
    model_dir = train(config)
    report = evaluate(load_model(model_dir, device="cuda"), examples / "data/digits/test.jsonl",
                      parts=("retrieval",))
    assert report["retrieval"]["audio->image"]["R@1"] > 30  # chance: 10
