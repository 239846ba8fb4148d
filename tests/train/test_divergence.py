"""A diverging run stops at the first non-finite loss or gradient and writes no model (or skips, when asked)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from fixture_ddp import diverging_worker
from fixture_modalities import run_config
from safetensors.torch import load_file

from gramx.cli import main
from gramx.train.config import parse_config
from gramx.train.divergence import DivergedError
from gramx.train.checkpoint import latest_checkpoint
from gramx.train.loop import train


def write_run(tmp_path, **sections) -> str:
    data = run_config(tmp_path, **sections)
    data["data"]["val"] = None
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def with_nan_row(tmp_path, row: int = 5) -> None:
    """Row ``row`` of the training manifest gets a point of NaNs (a broken feature file would do the same)."""
    manifest = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[row]["point"] = [float("nan")] * 8
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_diverging_run_stops_naming_the_step_and_writes_no_model(tmp_path, fixture_plugins, capsys):
    run_file = write_run(tmp_path, optim={"epochs": 2}, output={"checkpoint_every": 1, "keep_checkpoints": 5})
    assert main(["train", run_file, "--set", "optim.lr=1e12"]) == 1
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert err.startswith("gramx: error: training diverged at step 2: the gradient norm is nan")
    assert "Traceback" not in err and "optim.lr is 1e+12" in err
    assert f"its last checkpoint, {run / 'checkpoints' / 'step-00000001'}, stays" in err
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000001"]  # the last good state
    assert all(t.isfinite().all() for t in load_file(str(run / "checkpoints" / "step-00000001" /
                                                       "model.safetensors")).values())
    assert not (run / "model").exists()
    assert [r["step"] for r in records(run)] == [1]  # nothing logged for the step not taken


def test_the_loss_term_that_is_not_finite_is_named(tmp_path, fixture_plugins):
    data = run_config(tmp_path, loss={"dam_weight": 0.5}, data={"shuffle": False})
    with_nan_row(tmp_path, row=5)  # in the second batch of four
    with pytest.raises(DivergedError, match=r"step 2: the loss is nan \(contrastive term nan, dam term nan\)") as info:
        train(parse_config(data, tmp_path))
    assert "no checkpoint was written before it" in str(info.value)
    assert not (tmp_path / "run" / "model").exists()


def test_weights_that_are_not_finite_after_the_last_step_are_not_written(tmp_path, fixture_plugins, monkeypatch):
    """Loss and gradient finite, but the update itself overflows: nothing is written, the step is named."""
    from gramx.train.optim import Precision

    step = Precision.step

    def overflowing(self, optimizer, params, *args, **kwargs):
        step(self, optimizer, params, *args, **kwargs)
        with torch.no_grad():
            params[0].fill_(float("inf"))

    monkeypatch.setattr(Precision, "step", overflowing)
    data = run_config(tmp_path, optim={"max_steps": 1})
    with pytest.raises(DivergedError, match=r"step 1: after it the weight model\..* is not finite"):
        train(parse_config(data, tmp_path))
    assert latest_checkpoint(tmp_path / "run") is None and not (tmp_path / "run" / "model").exists()


def test_non_finite_steps_can_be_skipped_and_are_counted(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"epochs": 2, "skip_nonfinite": 1}, output={"checkpoint_every": 1,
                                                                                   "keep_checkpoints": 20})
    data["data"]["val"] = None
    with_nan_row(tmp_path)
    model_dir = train(parse_config(data, tmp_path))  # the NaN row's batch is skipped once an epoch
    assert all(t.isfinite().all() for t in load_file(str(model_dir / "model.safetensors")).values())
    steps = [r for r in records(model_dir.parent) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    skipped = [r["step"] for r in steps if r["loss"] is None]
    assert len(skipped) == 2 and steps[-1]["skipped_steps"] == 2
    assert json.loads((model_dir / "config.json").read_text())["training"]["skipped_steps"] == 2

    # the count is part of the resume state: a run resumed between the two skips ends the same
    resumed = tmp_path / "resumed"
    shutil.copytree(model_dir.parent, resumed)
    shutil.rmtree(resumed / "model")
    for checkpoint in (resumed / "checkpoints").iterdir():
        if int(checkpoint.name.split("-")[1]) > skipped[0]:
            shutil.rmtree(checkpoint)
    data["output"]["dir"] = str(resumed)
    again = train(parse_config(data, tmp_path), resume=True)
    assert json.loads((again / "config.json").read_text())["training"]["skipped_steps"] == 2
    a, b = load_file(str(model_dir / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_skipping_stops_after_the_allowed_steps_in_a_row(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"epochs": 2, "lr": 1e12, "skip_nonfinite": 2})
    with pytest.raises(DivergedError, match=r"at step 4 after skipping 2 such steps in a row: the gradient norm"):
        train(parse_config(data, tmp_path))
    assert [r.get("skipped_steps") for r in records(tmp_path / "run")] == [None, 1, 2]



@pytest.mark.slow
def test_every_process_stops_at_the_step_one_process_found_not_finite(tmp_path, fixture_plugins, free_port):
    """Only process 1 sees a NaN loss at step 3 (its gradient is fine): both stop there, neither waits forever."""
    data = run_config(tmp_path, n=16, optim={"max_steps": 4})
    data["data"].update(batch_size=8, val=None)
    data["device"] = "cpu"
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(data))
    context = mp.start_processes(diverging_worker, args=(2, free_port(), str(config_path), str(tmp_path)), nprocs=2,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 300  # a guard against a hang, far above the few seconds this takes
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a process kept waiting after the other stopped")
    messages = [(tmp_path / f"rank-{rank}.txt").read_text() for rank in range(2)]
    assert messages[0] == messages[1]
    assert messages[0].startswith("training diverged at step 3: the loss is nan")
    assert not (tmp_path / "run" / "model").exists()
