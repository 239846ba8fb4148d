"""The trainer's commands (gramx.cli.train_commands): train, export, shards and config, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from fixture_modalities import BOOT, run_config, subprocess_env

import gramx
from gramx.cli import main
from gramx.data.shard_reader import read_shards
from gramx.embed.embedding import embed_values


@pytest.fixture
def run_file(tmp_path, fixture_plugins):
    """A run file of the fixture plugin, its training manifest named relative to it."""
    data = run_config(tmp_path, optim={"epochs": 3})
    data["data"]["train"] = "train.jsonl"  # relative to the run file
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_applies_overrides_records_them_and_the_loss_falls(run_file, tmp_path):
    assert main(["train", str(run_file), "--set", "optim.lr=0.02", "--device", "cpu"]) == 0
    run = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert run["optim"]["lr"] == 0.02 and run["device"] == "cpu"
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(losses) == 18 and sum(losses[-4:]) < sum(losses[:4])
    model = gramx.load_model(tmp_path / "run" / "model")
    assert model.score == "volume" and model.dim == 8


def test_export_writes_a_copy_that_embeds_the_same(trained, fixture_plugins, tmp_path):
    assert main(["export", str(trained.model), "-o", str(tmp_path / "copy")]) == 0
    copy, model = gramx.load_model(tmp_path / "copy"), gramx.load_model(trained.model)
    for name, values in {"vector": [[0.5] * 8], "text": ["the digit two"]}.items():
        assert torch.equal(embed_values(copy, name, values), embed_values(model, name, values))


def test_shards_writes_every_row_of_the_manifest(trained, fixture_plugins, tmp_path):
    assert main(["shards", str(trained.folder / "val.jsonl"), "-o", str(tmp_path / "shards"),
                 "--shard-size", "5"]) == 0
    shards = read_shards(tmp_path / "shards")
    assert len(shards) == 12 and list(shards.rows) == [5, 5, 2]


def test_config_show_prints_the_validated_run_file_with_its_defaults(run_file, capsys):
    assert main(["config", "show", str(run_file), "--set", "optim.lr=0.5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 0.5 and shown["loss"]["type"] == "gram"  # the default loss, filled in


@pytest.mark.slow
def test_progress_is_a_line_per_interval_when_not_a_terminal(tmp_path):
    """Piped to a log, training prints plain lines (no carriage-return bar updates)."""
    data = run_config(tmp_path, optim={"max_steps": 4})
    data["logging"]["progress"] = True
    data["data"]["val"] = None
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(data))
    env = {**subprocess_env(), "GRAMX_PROGRESS_INTERVAL": "0"}
    proc = subprocess.run([sys.executable, "-c", BOOT, "train", str(run_file)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: ")]
    assert [line.split()[1] for line in lines][:4] == ["1/4", "2/4", "3/4", "4/4"]
