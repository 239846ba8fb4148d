"""Checkpoints: an exact round trip of every state, the newest complete one found, pruning, resume modes,
and a state that is no position of the run refused naming its file."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
import yaml
from fixture_modalities import one_line_error, run_config
from safetensors.torch import load_file, save_file

from gramx.cli.app import main
from gramx.errors import GramxError
from gramx.train.checkpoint import (CheckpointError, Plan, TrainingParts, latest_checkpoint, list_checkpoints,
                                    prune_checkpoints, restore_checkpoint, resume_from, rng_state, write_checkpoint)
from gramx.train.config import build_model, parse_config
from gramx.train.loop import train
from gramx.train.objective import build_objective
from gramx.train.optim import build_optimizer, build_scheduler

CPU = torch.device("cpu")
PLAN = Plan(total_steps=10, steps_per_epoch=5, accumulate=1, world_size=1)


def make_parts(folder, seed: int) -> TrainingParts:
    """A 3-modality model, its objective, AdamW and the warm-up + cosine schedule, from ``seed``."""
    config = parse_config(run_config(folder, optim={"warmup_steps": 2}), folder)
    torch.manual_seed(seed)
    model = build_model(config)
    objective = build_objective(config.loss, config.loss_type, list(config.modalities), config.dim)
    optimizer = build_optimizer([model, objective], config.optim)
    return TrainingParts(model, objective, optimizer, build_scheduler(optimizer, config.optim, PLAN.total_steps))


def take_steps(parts: TrainingParts, steps: int) -> None:
    params = [p for group in parts.optimizer.param_groups for p in group["params"]]
    for _ in range(steps):
        parts.optimizer.zero_grad()
        sum(((p - 0.1) ** 2).sum() for p in params).backward()
        parts.optimizer.step()
        parts.scheduler.step()


def snapshot(parts: TrainingParts) -> dict:
    """Every state a checkpoint holds, as plain values (tensors cloned, the rest through JSON)."""
    optimizer = parts.optimizer.state_dict()
    return {
        "model": {k: v.clone() for k, v in parts.model.state_dict().items()},
        "objective": {k: v.clone() for k, v in parts.objective.state_dict().items()},
        "optimizer": {pid: {k: v.clone() for k, v in entry.items()} for pid, entry in optimizer["state"].items()},
        "groups": json.loads(json.dumps(optimizer["param_groups"])),
        "scheduler": json.loads(json.dumps(parts.scheduler.state_dict())),
    }


def assert_equal(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal(a[key], b[key])
    else:
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b


def progress(step: int, epoch: int = 0, micro: int | None = None) -> dict:
    return {"step": step, "epoch": epoch, "micro": step - 5 * epoch if micro is None else micro, "world_size": 1,
            "errors": [{"count": 0}]}


def seeded_rng(seed: int) -> list:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return [rng_state(CPU)]


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_a_restored_checkpoint_continues_exactly_as_the_run_that_wrote_it(tmp_path, fixture_plugins):
    """Weights, optimizer moments, schedule and every RNG come back; the next step is bit-identical."""
    run = make_parts(tmp_path, seed=0)
    take_steps(run, 3)
    path = write_checkpoint(tmp_path / "checkpoints" / "step-00000003", run, progress(3), seeded_rng(11))
    expected_draws, saved = draws(), snapshot(run)
    assert saved["optimizer"] and saved["scheduler"]["last_epoch"] == 3  # a state worth checking

    resumed = make_parts(tmp_path, seed=1)  # other weights, another position of the schedule
    take_steps(resumed, 1)
    seeded_rng(12)
    state = restore_checkpoint(path, resumed, PLAN, rank=0, device=CPU)
    assert (state["step"], state["epoch"], state["micro"]) == (3, 0, 3)
    assert draws() == expected_draws
    assert_equal(snapshot(resumed), saved)
    take_steps(run, 1)
    take_steps(resumed, 1)
    assert_equal(snapshot(resumed), snapshot(run))
    assert resumed.optimizer.param_groups[0]["lr"] == run.optimizer.param_groups[0]["lr"]


def test_a_failed_write_leaves_no_checkpoint(tmp_path, fixture_plugins, monkeypatch):
    parts = make_parts(tmp_path, seed=0)
    folder = tmp_path / "checkpoints"
    folder.mkdir()

    def broken(module, skip=frozenset()):
        raise OSError("disk full")

    monkeypatch.setattr("gramx.train.checkpoint.state_for_saving", broken)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(folder / "step-00000001", parts, progress(1), seeded_rng(0))
    assert list(folder.iterdir()) == [] and latest_checkpoint(tmp_path) is None


def test_a_checkpoint_of_another_number_of_processes_is_refused(tmp_path, fixture_plugins):
    parts = make_parts(tmp_path, seed=0)
    path = write_checkpoint(tmp_path / "step-00000002", parts, {**progress(2), "world_size": 2},
                            seeded_rng(0) + seeded_rng(1))
    with pytest.raises(CheckpointError, match="written by 2 processes, this run has 1") as info:
        restore_checkpoint(path, parts, PLAN, rank=0, device=CPU)
    assert info.value.hint == "resume with the same number of processes"


@pytest.mark.parametrize("name", ["rng.safetensors", "objective.safetensors", "optimizer.safetensors"])
def test_a_missing_file_is_named_with_what_to_do(tmp_path, fixture_plugins, name):
    parts = make_parts(tmp_path, seed=0)
    path = write_checkpoint(tmp_path / "step-00000002", parts, progress(2), seeded_rng(0))
    (path / name).unlink()
    with pytest.raises(CheckpointError, match=f"{path / name}: cannot be restored") as info:
        restore_checkpoint(path, parts, PLAN, rank=0, device=CPU)
    assert f"delete {path} to resume from the one before it" in info.value.hint


def test_missing_weights_are_named_by_the_model_directory_reader(tmp_path, fixture_plugins):
    parts = make_parts(tmp_path, seed=0)
    path = write_checkpoint(tmp_path / "step-00000002", parts, progress(2), seeded_rng(0))
    (path / "model.safetensors").unlink()
    with pytest.raises(GramxError, match=f"{path}: missing model.safetensors"):
        restore_checkpoint(path, parts, PLAN, rank=0, device=CPU)


def fake_checkpoints(folder, steps, incomplete=()) -> None:
    for step in [*steps, *incomplete]:
        (folder / f"step-{step:08d}").mkdir(parents=True)
        if step in steps:
            (folder / f"step-{step:08d}" / "state.json").write_text("{}")
    (folder / ".step-00000099.tmp-x1y2").mkdir()  # a write under way
    (folder / "notes.txt").write_text("mine")


def test_the_newest_complete_checkpoint_is_found_by_its_step(tmp_path):
    folder = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path) is None and list_checkpoints(folder) == []
    fake_checkpoints(folder, steps=[2, 10, 9], incomplete=[11])
    assert [step for step, _ in list_checkpoints(folder)] == [2, 9, 10]
    assert latest_checkpoint(tmp_path) == folder / "step-00000010"


def test_pruning_keeps_the_newest_and_leaves_other_files(tmp_path):
    folder = tmp_path / "checkpoints"
    fake_checkpoints(folder, steps=[3, 6, 9, 12], incomplete=[13])
    prune_checkpoints(folder, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == [".step-00000099.tmp-x1y2", "notes.txt", "step-00000009",
                                                        "step-00000012", "step-00000013"]


def test_resume_modes(tmp_path):
    assert resume_from(tmp_path, "off") is None and resume_from(tmp_path, "latest") is None
    with pytest.raises(GramxError, match="nothing to resume: .*checkpoints has no checkpoint") as info:
        resume_from(tmp_path, "required")
    assert "--resume latest" in info.value.hint
    fake_checkpoints(tmp_path / "checkpoints", steps=[4, 8])
    newest = tmp_path / "checkpoints" / "step-00000008"
    assert resume_from(tmp_path, "latest") == newest and resume_from(tmp_path, "required") == newest
    assert resume_from(tmp_path, "off") is None  # a new run, whatever the folder holds


# ---------------------------------------------------------------- states that are no position of the run


@pytest.fixture
def stopped_run(tmp_path, fixture_plugins):
    """A run file and its run stopped after step 3 of 6 (its newest checkpoint: step 3, epoch 0)."""
    data = run_config(tmp_path, optim={"epochs": 1}, output={"checkpoint_every": 3})
    data["data"]["val"] = None
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(data))
    train(parse_config(data, tmp_path))
    run = tmp_path / "run"
    shutil.rmtree(run / "model")
    shutil.rmtree(run / "checkpoints" / "step-00000006")
    return run_file, latest_checkpoint(run)


@pytest.mark.parametrize("edit,expected", [
    ({"step": -3}, "must be whole numbers >= 0"),
    ({"step": 3.5}, "must be whole numbers >= 0"),
    ({"step": 6, "micro": 24}, "step 6 is not the step its folder step-00000003 names"),
    ({"epoch": 1}, "is no position of this run"),
    ({"micro": 5}, "is no position of this run"),
    ({"rng": []}, "rng and errors need one entry per process (1)"),
    ({"errors": [{"count": 0}]}, "cannot be restored (KeyError: 'examples')"),
    ({"optimizer": None}, None),
])
def test_an_edited_checkpoint_state_is_refused_naming_it(stopped_run, capsys, edit, expected):
    run_file, checkpoint = stopped_run
    state = json.loads((checkpoint / "state.json").read_text())
    if edit == {"optimizer": None}:
        del state["optimizer"]
        expected = "a state needs the keys"
    else:
        state.update(edit)
    (checkpoint / "state.json").write_text(json.dumps(state))
    assert main(["train", str(run_file), "--resume"]) == 1
    error, hint = one_line_error(capsys)
    assert error.startswith(f"gramx: error: {checkpoint / 'state.json'}: ") and expected in error, error
    assert "--overwrite" in hint
    assert not (run_file.parent / "run" / "model").exists()


def test_a_checkpoint_past_the_end_of_the_run_is_refused(stopped_run, capsys):
    """Step 3 of a run shortened to 2 steps: no position of it to continue from."""
    run_file, checkpoint = stopped_run
    assert main(["train", str(run_file), "--resume", "--set", "optim.max_steps=2"]) == 1
    error, _ = one_line_error(capsys)
    assert error == f"gramx: error: {checkpoint / 'state.json'}: step 3 is past the end of this run (2 steps)"


def test_a_checkpoint_of_other_data_is_refused(stopped_run, capsys):
    """The same checkpoint against a batch size that makes epochs of 3 steps: its epoch 0, step 3 does not fit."""
    run_file, checkpoint = stopped_run
    assert main(["train", str(run_file), "--resume", "--set", "data.batch_size=8"]) == 1
    error, hint = one_line_error(capsys)
    assert "step 3 at epoch 0, micro-batch 3 is no position of this run (3 steps per epoch, 1 micro-batches per step)" in error
    assert "the run file, data and --set options the run was started with" in hint


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "missing tensor"])
def test_a_damaged_optimizer_state_is_an_error_naming_its_file(stopped_run, capsys, damage):
    run_file, checkpoint = stopped_run
    path = checkpoint / "optimizer.safetensors"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        tensors = load_file(str(path))
        key = next(k for k in tensors if k.endswith("exp_avg"))
        if damage == "wrong shape":
            tensors[key] = torch.zeros(3)
        else:
            del tensors[key]
        save_file(tensors, str(path))
    assert main(["train", str(run_file), "--resume"]) == 1
    error, hint = one_line_error(capsys)
    assert error.startswith(f"gramx: error: {path}: cannot be restored (")
    assert f"delete {checkpoint} to resume from the one before it" in hint
