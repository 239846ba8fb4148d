"""Multi-process training: gathered features give exactly the single-process gradient."""

from __future__ import annotations

import pytest
import json
import shutil

import torch
import torch.multiprocessing as mp
import yaml
from fixture_ddp import global_batch_grads, grads_worker, local_loss_worker, train_worker
from fixture_modalities import make_dataset, run_config
from safetensors.torch import load_file

from gramx.runtime import distributed as gdist



def test_gather_features_without_process_group_is_identity():
    feats = {"a": torch.randn(3, 4, requires_grad=True)}
    masks = {"a": torch.tensor([True, False, True])}
    out_feats, out_masks, local = gdist.gather_features(feats, masks)
    assert out_feats["a"] is feats["a"] and out_masks["a"] is masks["a"] and local.all()


@pytest.mark.slow
def test_two_gloo_processes_match_single_process_gradients(tmp_path, fixture_plugins, free_port):
    data = run_config(tmp_path, n=16, loss={"dam_weight": 0.5},
                      optim={"max_steps": 3}, output={"checkpoint_every": 2})
    data["modalities"]["point"] = {"head": {"hidden": 8}}
    data["data"]["batch_size"] = 8
    data["device"] = "cpu"
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(data))

    single = global_batch_grads(str(config_path), list(range(8)), world=1)
    mp.spawn(grads_worker, args=(2, free_port(), str(config_path), str(tmp_path)), nprocs=2, join=True)
    multi = load_file(str(tmp_path / "ddp_grads.safetensors"))

    assert int(multi["rows"]) == 8  # the loss saw the global batch
    assert set(single) == set(multi)
    assert "objective.contrastive.temperature.log_t" in single and "objective.extras.dam.head.0.weight" in single
    for key, grad in single.items():
        assert torch.allclose(grad, multi[key], atol=1e-5, rtol=1e-4), key

    # a short DDP training run: only rank 0 writes the logs, checkpoints and model
    mp.spawn(train_worker, args=(2, free_port(), str(config_path), "off"), nprocs=2, join=True)
    run = tmp_path / "run"
    model_dir = (tmp_path / "run.model").read_text()
    assert model_dir == str(run / "model") and (run / "model" / "model.safetensors").is_file()
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3]
    state = json.loads((run / "checkpoints" / "step-00000003" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2


LOCAL_LOSSES = {
    "gram-dam": {"type": "gram", "anchor": "text", "dam_weight": 0.5, "pairwise_weight": 0.3},
    "triangle": {"type": "triangle", "anchor": "all"},
    "symile": {"type": "symile"},
    "pairwise_all": {"type": "pairwise_all"},
}


@pytest.mark.slow
def test_the_local_loss_on_two_processes_gives_the_global_gradients(tmp_path, fixture_plugins, free_port):
    """open_clip's local loss: each process its own rows against the global batch; same gradients as one process."""
    paths = []
    for name, loss in LOCAL_LOSSES.items():
        data = run_config(tmp_path, n=16, loss={**loss, "local": True})
        data["modalities"]["point"] = {"head": {"hidden": 8}}
        data["data"]["batch_size"] = 8
        data["device"] = "cpu"
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        paths.append(str(path))
    mp.spawn(local_loss_worker, args=(2, free_port(), paths, str(tmp_path)), nprocs=2, join=True)
    for name, path in zip(LOCAL_LOSSES, paths):
        single = global_batch_grads(path, list(range(8)), world=1)
        multi = load_file(str(tmp_path / f"{name}.grads.safetensors"))
        assert set(single) == set(multi), name
        for key, grad in single.items():
            assert torch.allclose(grad, multi[key], atol=1e-5, rtol=1e-4), (name, key)


@pytest.mark.slow
def test_two_processes_resume_exactly_with_random_loads_workers_and_accumulation(tmp_path, fixture_plugins, free_port):
    """Complete rows (a static DDP graph), accumulation, random augmentation in load, 2 workers per process."""
    data = run_config(tmp_path, optim={"epochs": 2, "accumulate": 2, "max_steps": None},
                      output={"checkpoint_every": 1, "keep_checkpoints": 20})
    data["data"].update(train=str(make_dataset(tmp_path, n=24, name="complete.jsonl")), batch_size=4, workers=2,
                        val=None)
    data["modalities"]["vector"] = {"options": {"noise": 0.3}}
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(data))
    mp.spawn(train_worker, args=(2, free_port(), str(config_path), "off"), nprocs=2, join=True)
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "model")
    for step in range(5, 7):  # the newest left is step 4: epoch 1, mid-way (3 steps per epoch)
        shutil.rmtree(resumed / "checkpoints" / f"step-{step:08d}")
    data["output"]["dir"] = str(resumed)
    config_path.write_text(yaml.safe_dump(data))
    mp.spawn(train_worker, args=(2, free_port(), str(config_path), "required"), nprocs=2, join=True)
    a, b = load_file(str(run / "model" / "model.safetensors")), load_file(str(resumed / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(line).get("loss") for line in (folder / "metrics.jsonl").read_text().splitlines()]
              for folder in (run, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 7  # six steps and the final record
