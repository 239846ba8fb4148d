"""GPU checks (marker `cuda`): skipped on machines without CUDA, run by scripts/gpu-check.sh."""

import os

import torch
import torch.nn.functional as F
import pytest

import gramx
from gramx.cli import main
from gramx.index import EmbeddingIndex
from gramx.losses.config import LossConfig
from gramx.losses.contrastive import Temperature
from gramx.losses.table import LOSS_TYPES
from gramx.scores.volume import VolumeIndex
from gramx.scores.volume_once import volume_search_once

#: The devices compared; a CPU dry run of these tests' plumbing sets both to "cpu".
DEVICES = ("cpu", "cuda")

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


@pytest.mark.parametrize("name", sorted(LOSS_TYPES))
def test_every_objective_on_cuda_equals_cpu(name):
    kind, names = LOSS_TYPES[name], ["audio", "text", "video"]
    cfg = LossConfig(type=name)
    feats = {m: _unit(48, 32, dtype=torch.float32, seed=i) for i, m in enumerate(names)}
    masks = {m: torch.rand(48, generator=torch.Generator().manual_seed(i)) > 0.2 for i, m in enumerate(names)}
    results = []
    for device in DEVICES:
        torch.manual_seed(0)  # the same fusion heads and gates on both devices
        options = {"modalities": names, "dim": 32} if kind.space else {}
        term = kind.build(cfg, Temperature(cfg.temperature), options).to(device)
        inputs = {m: x.to(device).detach().requires_grad_(True) for m, x in feats.items()}
        loss = term(inputs, {m: x.to(device) for m, x in masks.items()})
        loss.backward()
        results.append((loss.detach().cpu(), {m: x.grad.cpu() for m, x in inputs.items()}))
    (cpu_loss, cpu_grads), (gpu_loss, gpu_grads) = results
    torch.testing.assert_close(gpu_loss, cpu_loss, rtol=1e-5, atol=1e-6)
    for m in names:
        torch.testing.assert_close(gpu_grads[m], cpu_grads[m], rtol=1e-4, atol=1e-6)


def test_volume_once_on_cuda_equals_the_index():
    candidates = _unit(3000, 3, 128, dtype=torch.float32).to(DEVICES[1])
    queries = _unit(50, 128, dtype=torch.float32, seed=1).to(DEVICES[1])
    values, indices = volume_search_once(queries, candidates, k=10)
    want, _ = VolumeIndex.build(candidates).search(queries, k=10)
    torch.testing.assert_close(values, want, rtol=0, atol=3e-6)


def test_index_search_streamed_to_cuda_equals_cpu(trained, fixture_plugins):
    index = EmbeddingIndex.load(trained.index)
    queries = _unit(6, index.record.model.dim, dtype=torch.float32, seed=2)
    for names in (index.modalities[:1], index.modalities[:2], index.modalities):
        _, cpu_values, cpu_positions = index.top(queries, names, 5)
        _, gpu_values, gpu_positions = index.top(queries.to(DEVICES[1]), names, 5)
        assert torch.equal(gpu_positions, cpu_positions)
        torch.testing.assert_close(gpu_values, cpu_values, rtol=0, atol=1e-5)


def test_embed_on_cuda_into_bfloat16_equals_cpu(trained, fixture_plugins, tmp_path):
    from fixture_modalities import make_dataset

    manifest = str(make_dataset(tmp_path, n=20, missing=True))
    for name, device, dtype in (("cpu", DEVICES[0], "float32"), ("gpu", DEVICES[1], "bfloat16")):
        assert main(["embed", str(trained.model), manifest, "-o", str(tmp_path / name), "--device", device,
                     "--dtype", dtype, "--batch-size", "8"]) == 0
    cpu, gpu = EmbeddingIndex.load(tmp_path / "cpu"), EmbeddingIndex.load(tmp_path / "gpu")
    assert gpu.record.dtype == "bfloat16" and cpu.describe(range(20)) == gpu.describe(range(20))
    for name in cpu.modalities:
        want, present = cpu.segments[0].read(name, 0, 20)
        got, got_present = gpu.segments[0].read(name, 0, 20)
        assert torch.equal(present, got_present)
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)  # bfloat16 keeps 8 bits of mantissa


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
