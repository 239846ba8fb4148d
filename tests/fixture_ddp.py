"""Worker code for the multi-process tests (importable by spawned processes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def global_batch_grads(config_path: str, rows: list[int], world: int) -> dict[str, torch.Tensor]:
    """Gradients of the training loss for ``rows`` of the manifest, as the trainer computes them."""
    from gramx.runtime import distributed as gdist
    from gramx.train.config import load_config
    from gramx.data.loading import Collator, ManifestDataset
    from gramx.data.manifest import read_manifest
    from gramx.train.config import build_model
    from gramx.train.objective import build_objective

    config = load_config(config_path)
    torch.manual_seed(0)
    model = build_model(config).eval()  # eval: no dropout, so runs compare exactly
    objective = build_objective(config.loss, config.loss_type, list(config.modalities), config.dim)
    manifest = read_manifest(config.data.train)
    mods = {n: (model.modalities[n], model.modality_configs[n]) for n in model.names}
    dataset = ManifestDataset(manifest, mods)
    batch = Collator(mods)([dataset[i] for i in rows])
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, find_unused_parameters=True)
    feats = net(batch["inputs"], batch["masks"])
    local = config.loss.local
    loss, _, n = objective.global_loss(feats, batch["masks"], seed=(0, 0, 0), local=local)
    (loss * world).backward()
    gdist.average_gradients(objective.parameters(), world, local=local)
    grads = {f"model.{k}": p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    grads.update({f"objective.{k}": p.grad.clone() for k, p in objective.named_parameters() if p.grad is not None})
    grads["rows"] = torch.tensor([n])
    return grads


def join(rank: int, world: int, port: int):
    """Become process ``rank`` of ``world`` on this machine (the fixture plugin only, one thread): its context."""
    sys.path.insert(0, str(HERE))
    import fixture_modalities

    from gramx.runtime import distributed as gdist

    fixture_modalities.install()
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return gdist.init_distributed("cpu")


def leave() -> None:
    """Leave the process group once no DDP wrapper of this process is left alive (gloo threads stop cleanly)."""
    import gc

    from gramx.runtime import distributed as gdist

    gc.collect()  # a DDP wrapper sits in reference cycles: free it now, not during interpreter shutdown
    gdist.barrier()
    gdist.cleanup()


def grads_worker(rank: int, world: int, port: int, config_path: str, out: str) -> None:
    """One torchrun-like process (env:// rendezvous): its share of the global batch's gradients."""
    from safetensors.torch import save_file

    ctx = join(rank, world, port)
    assert ctx.world_size == world and ctx.rank == rank
    assert torch.distributed.get_backend() == "gloo"
    # the global batch is rows 0..7; the processes hold 5 and 3 rows (unequal on purpose)
    split = [list(range(0, 5)), list(range(5, 8))]
    grads = global_batch_grads(config_path, split[rank], world)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in grads.items()}, os.path.join(out, "ddp_grads.safetensors"))
    leave()


def local_loss_worker(rank: int, world: int, port: int, config_paths: list[str], out: str) -> None:
    """One process of a local-loss run: the gradients of each config's loss on its share of rows 0..7."""
    from safetensors.torch import save_file

    join(rank, world, port)
    split = [list(range(0, 3)), list(range(3, 8))]  # unequal shares on purpose
    for path in config_paths:
        grads = global_batch_grads(path, split[rank], world)
        if rank == 0:
            name = Path(path).stem
            save_file({k: v.contiguous() for k, v in grads.items()}, os.path.join(out, f"{name}.grads.safetensors"))
    leave()


def train_worker(rank: int, world: int, port: int, config_path: str, resume: str) -> None:
    """One torchrun-like process of a training run (``resume`` as :func:`gramx.train.loop.train` takes it)."""
    import multiprocessing

    multiprocessing.set_start_method("fork", force=True)  # DataLoader workers as under torchrun, not spawned
    from gramx.train.config import load_config
    from gramx.train.loop import train

    join(rank, world, port)
    model_dir = train(load_config(config_path), resume=resume)
    if rank == 0:
        Path(config_path).with_suffix(".model").write_text(str(model_dir))
    leave()


def diverging_worker(rank: int, world: int, port: int, config_path: str, out: str) -> None:
    """A training process whose loss is NaN at step 3 on process 1 only (the gradient stays finite); each
    process writes the error it stopped with to ``out/rank-R.txt``."""
    from gramx.train.config import load_config
    from gramx.train.divergence import DivergedError
    from gramx.train.loop import Trainer, train

    forward_loss = Trainer.forward_loss

    def nan_on_process_1(self, batch):
        loss, parts, rows = forward_loss(self, batch)
        return (loss + float("nan") if rank == 1 and self.step == 2 else loss), parts, rows

    Trainer.forward_loss = nan_on_process_1
    join(rank, world, port)
    try:
        train(load_config(config_path))
    except DivergedError as exc:
        Path(out, f"rank-{rank}.txt").write_text(str(exc))
    leave()


def cli_alone(argv: list[str]) -> None:
    """A process of its own running the gramx command ``argv`` (the fixture plugin only, one thread)."""
    sys.path.insert(0, str(HERE))
    import fixture_modalities

    from gramx.cli import main

    fixture_modalities.install()
    torch.set_num_threads(1)
    assert main(argv) == 0


def cli_worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    """One torchrun-like process running the gramx command ``argv``."""
    from gramx.cli import main

    join(rank, world, port)
    assert main(argv) == 0
    leave()
