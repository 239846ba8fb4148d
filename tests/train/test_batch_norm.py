"""GlobalBatchNorm: two gloo processes normalise, differentiate and track statistics like one process."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from gramx.train.batch_norm import GlobalBatchNorm, GlobalBatchNorm1d, agree_on_sync, use_global_batch_norm


def net() -> nn.Sequential:
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(2), nn.BatchNorm1d(4, momentum=None))
    with torch.no_grad():  # not the default affine parameters, so their gradients matter
        for bn in (layers[1], layers[3]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return layers.double()


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(10, 3, 6, 6, generator=g, dtype=torch.float64), torch.randn(10, 4, 16, generator=g,
                                                                                   dtype=torch.float64)


def run(model: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two training steps (outputs, gradients, statistics after each)."""
    out = {}
    for step in range(2):
        inputs = (x * (step + 1)).requires_grad_(True)
        y = model(inputs)
        (y * weights).sum().backward()
        out[f"y{step}"], out[f"dx{step}"] = y.detach(), inputs.grad
        out.update({f"{k}{step}": v.clone() for k, v in model.state_dict().items()})
        out.update({f"grad.{k}{step}": p.grad.clone() for k, p in model.named_parameters()})
        model.zero_grad()
    return out


def worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = net()
    assert use_global_batch_norm(model) == 2
    x, weights = data()
    rows = slice(0, 7) if rank == 0 else slice(7, 10)  # unequal parts on purpose
    out = run(model, x[rows], weights[rows])
    for key in [k for k in out if k.startswith("grad.")]:  # what DDP does with parameter gradients
        torch.distributed.all_reduce(out[key])
    for key in ("y0", "y1", "dx0", "dx1"):  # each process's rows, in place in the global batch
        out[key] = out[key].new_zeros(10, *out[key].shape[1:]).index_copy(0, torch.arange(10)[rows], out[key])
        torch.distributed.all_reduce(out[key])
    partial = agree_on_sync({"a": model}, {"a": torch.tensor([rank == 0, False])})
    out["partial"] = torch.tensor([partial == ["a"] and not any(m.sync for m in model.modules()
                                                                 if isinstance(m, GlobalBatchNorm))])
    if rank == 0:
        torch.save(out, os.path.join(folder, "global.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_normalise_over_the_global_batch(tmp_path, free_port):
    x, weights = data()
    single = run(net(), x, weights)
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    multi = torch.load(tmp_path / "global.pt")
    assert multi.pop("partial").item()  # a modality with rows on one process only: local statistics there
    assert set(single) == set(multi)
    for key, value in single.items():
        assert torch.allclose(value, multi[key], atol=1e-10, rtol=1e-10), key


def test_conversion_keeps_parameters_buffers_and_single_process_behaviour():
    plain = net()
    converted = net()
    tensors = {k: v.data_ptr() for k, v in converted.state_dict().items()}
    assert use_global_batch_norm(converted) == 2
    assert isinstance(converted[3], GlobalBatchNorm1d) and isinstance(converted[3], nn.BatchNorm1d)
    assert {k: v.data_ptr() for k, v in converted.state_dict().items()} == tensors
    x, weights = data()
    a, b = run(plain, x, weights), run(converted, x, weights)  # no process group: plain BatchNorm
    for key in a:
        assert torch.equal(a[key], b[key]), key
    converted.eval()
    assert torch.equal(converted(x), plain.eval()(x))


@pytest.mark.parametrize("kind", [nn.SyncBatchNorm, nn.LazyBatchNorm2d])
def test_other_normalisation_layers_are_left_alone(kind):
    model = nn.Sequential(kind(4) if kind is nn.SyncBatchNorm else kind())
    assert use_global_batch_norm(model) == 0 and type(model[0]) is kind
