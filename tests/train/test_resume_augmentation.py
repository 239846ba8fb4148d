"""SIGKILL + resume equals the uninterrupted run, with random crops loaded by 2 DataLoader workers.

Before loads were seeded per row, the resumed run drew other crops than the one never
stopped (the workers' random streams restart while the loader skips the used batches) and
ended 0.09 away. The image encoder's random jitter (in the training process) is on too.
"""

from __future__ import annotations

import json
import signal

import pytest
from fixture_digits import digits_run, finish, gramx, largest_difference
from fixture_modalities import kill_at_checkpoint

from gramx.train.checkpoint import latest_checkpoint


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    run_file = digits_run(tmp_path, rows=48, options={"audio": {"crop": "random"}, "image": {"augment": True}},
                          names=("audio", "image"),
                          data={"batch_size": 8, "workers": 2}, optim={"max_steps": None, "epochs": 3, "lr": 3e-3},
                          output={"checkpoint_every": 2, "keep_checkpoints": 2})
    killed = gramx("train", str(run_file), "--set", "output.dir=killed", cwd=tmp_path)
    reference = gramx("train", str(run_file), "--set", "output.dir=reference", cwd=tmp_path)
    run_dir = tmp_path / "killed"
    kill_at_checkpoint(killed, run_dir, 8, timeout=600)  # past epoch 0's 6 steps
    assert killed.returncode == -signal.SIGKILL
    state = json.loads((latest_checkpoint(run_dir) / "state.json").read_text())
    assert state["epoch"] >= 1 and 0 < state["micro"] < 6  # killed mid-epoch, after the first
    finish(reference)

    out = finish(gramx("train", str(run_file), "--set", "output.dir=killed", "--resume", cwd=tmp_path))
    assert "resumed from" in out
    difference, key = largest_difference(tmp_path / "reference" / "model", run_dir / "model")
    assert difference == 0, (key, difference)  # bit for bit
    assert losses(run_dir) == losses(tmp_path / "reference")
