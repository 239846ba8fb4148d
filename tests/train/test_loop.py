"""Trainer: determinism, exact resume after SIGKILL, loss variants, bad rows, logs."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import torch
import yaml
from fixture_modalities import BOOT, kill_at_checkpoint, run_config, subprocess_env
from safetensors.torch import load_file

import gramx
from gramx.train.config import build_model, parse_config
from gramx.data.manifest import DataError
from gramx.errors import GramxError
from gramx.train.checkpoint import latest_checkpoint
from gramx.train.loop import train


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a, b, atol=1e-6):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol), key


def test_training_is_deterministic_and_logs(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"epochs": 2}, loss={"dam_weight": 0.5}, logging={"tensorboard": True})
    first = train(parse_config(data, tmp_path))
    data["output"]["dir"] = str(tmp_path / "again")
    second = train(parse_config(data, tmp_path))
    assert_same_weights(first, second, atol=0)
    run = first.parent
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert {"loss", "contrastive", "dam", "lr", "temperature", "samples_per_s"} <= set(steps[0])
    vals = [r for r in records if "val" in r]
    assert [r["step"] for r in vals] == [6, 12]  # each epoch end
    assert set(vals[-1]["val"]) == {"tuples", "score", "retrieval", "nway", "nway_cosine", "zeroshot"}
    assert records[-1]["done"] is True
    assert list((run / "tensorboard").iterdir())
    assert steps[-1]["temperature"] != pytest.approx(0.07, abs=1e-6)  # the temperature is trained
    config = json.loads((first / "config.json").read_text())
    assert config["training"]["steps"] == 12 and config["metrics"]["tuples"] == 12
    # a checkpoint is also a model directory; the last one holds the final weights
    checkpoint = latest_checkpoint(run)
    assert checkpoint.name == "step-00000012" and len(list((run / "checkpoints").iterdir())) == 2
    assert_same_weights(first, checkpoint, atol=0)
    assert gramx.load_model(checkpoint).dim == 8


@pytest.mark.parametrize("loss, score", [
    ({"type": "pairwise", "anchor": "text"}, "cosine"), ({"type": "pairwise_all"}, "cosine"),
    ({"type": "gram", "anchor": "all"}, "volume"), ({"type": "gram", "anchor": "text", "pairwise_weight": 0.5}, "volume"),
])
def test_loss_variants_train_and_the_model_scores_by_its_own_similarity(tmp_path, fixture_plugins, loss, score):
    data = run_config(tmp_path, loss=loss, optim={"epochs": 4})
    model_dir = train(parse_config(data, tmp_path))
    losses = [r["loss"] for r in map(json.loads, (model_dir.parent / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    quarter = len(losses) // 4
    assert sum(losses[-quarter:]) < sum(losses[:quarter])  # the loss falls
    model = gramx.load_model(model_dir)
    assert model.score == score
    assert gramx.evaluate.evaluate(model, tmp_path / "val.jsonl", parts=["nway"])["score"] == score


def test_frozen_cached_encoder_and_accumulation(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 3, "accumulate": 2, "warmup_steps": 1})
    data["modalities"]["text"] = {"options": {"freeze": True}}
    config = parse_config(data, tmp_path)
    torch.manual_seed(config.optim.seed)  # the trainer's seed before building: the same initial weights
    initial = build_model(config).state_dict()
    trained = weights(train(config))
    assert torch.equal(trained["encoders.text.bag.weight"], initial["encoders.text.bag.weight"])  # frozen
    assert not torch.equal(trained["heads.text.net.1.weight"], initial["heads.text.net.1.weight"])  # its head trains


def test_preloaded_samples_train_like_loaded_ones(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 4})
    loaded = train(parse_config(data, tmp_path))
    data["modalities"]["vector"] = {"preload": True}
    data["modalities"]["point"] = {"preload": True}
    data["output"]["dir"] = str(tmp_path / "preloaded")
    assert_same_weights(loaded, train(parse_config(data, tmp_path)), atol=1e-6)


@pytest.mark.parametrize("preload", [False, True])
def test_skip_bad_rows_reports_count(tmp_path, fixture_plugins, caplog, preload):
    data = run_config(tmp_path, data={"on_error": "skip"}, optim={"epochs": 2})
    data["modalities"]["vector"] = {"preload": preload}
    (tmp_path / "vec" / "train-5.npy").write_bytes(b"broken")
    with caplog.at_level("WARNING", logger="gramx.train"):
        model_dir = train(parse_config(data, tmp_path))
    assert "skipped 1 bad training rows" in caplog.text and "train.jsonl line 6 (vector)" in caplog.text
    assert json.loads((model_dir / "config.json").read_text())["training"]["skipped_rows"] == 1


@pytest.mark.parametrize("preload", [False, True])
def test_raise_on_bad_row_names_line_and_file(tmp_path, fixture_plugins, preload):
    data = run_config(tmp_path)
    data["modalities"]["vector"] = {"preload": preload}
    (tmp_path / "vec" / "train-5.npy").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"train.jsonl line 6 \(vector\): .*train-5.npy"):
        train(parse_config(data, tmp_path))


def test_existing_run_needs_resume(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 1})
    config = parse_config(data, tmp_path)
    train(config)
    with pytest.raises(GramxError, match="already holds a run"):
        train(config)
    data["output"]["dir"] = str(tmp_path / "fresh")
    with pytest.raises(GramxError, match="nothing to resume"):
        train(parse_config(data, tmp_path), resume=True)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, fixture_plugins):
    """A run killed with SIGKILL after a mid-epoch checkpoint and resumed ends with the same weights."""
    data = run_config(tmp_path, n=40, optim={"epochs": 2}, loss={"dam_weight": 0.5},
                      output={"checkpoint_every": 3}, eval={"every": 4})
    data["modalities"]["vector"] = {"options": {"delay": 0.04}}  # slow enough to be killed mid-run
    data["modalities"]["point"] = {"head": {"hidden": 8, "dropout": 0.2}}  # dropout uses the RNG
    data["data"]["workers"] = 1
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-c", BOOT, "train", str(run_file)]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # the uninterrupted reference trains in a thread of this process meanwhile
    reference_config = parse_config({**data, "output": {**data["output"], "dir": str(tmp_path / "ref")}}, tmp_path)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(model=train(reference_config)))
    thread.start()
    run_dir = tmp_path / "run"
    kill_at_checkpoint(proc, run_dir, 12)  # past epoch 0's 10 steps
    out = proc.stdout.read().decode()
    assert proc.returncode == -signal.SIGKILL, out
    assert not (run_dir / "model").exists()
    state = json.loads((latest_checkpoint(run_dir) / "state.json").read_text())
    assert state["epoch"] == 1 and 0 < state["micro"] < 10  # killed mid-epoch

    thread.join()
    reference = result["model"]
    resumed = subprocess.run(cmd + ["--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert_same_weights(reference, run_dir / "model")
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 21))  # records after the checkpoint are not duplicated


def test_pairwise_term_fixes_the_sign_the_volume_cannot_see(tmp_path, fixture_plugins):
    from gramx.train.objective import build_objective

    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=-1)
    noisy = lambda: torch.nn.functional.normalize(text + 0.1 * torch.randn(16, 8, generator=g), dim=-1)
    aligned = {"text": text, "vector": noisy(), "point": noisy()}
    flipped = {**aligned, "point": -aligned["point"]}
    data = run_config(tmp_path, loss={"type": "gram", "anchor": "text"})
    config = parse_config(data, tmp_path)
    gram_only = build_objective(config.loss, config.loss_type, list(config.modalities), config.dim)
    assert torch.allclose(gram_only(aligned, None)[0], gram_only(flipped, None)[0])
    data["loss"]["pairwise_weight"] = 0.5
    config = parse_config(data, tmp_path)
    with_sign = build_objective(config.loss, config.loss_type, list(config.modalities), config.dim)
    total, parts = with_sign(flipped, None)
    assert set(parts) == {"contrastive", "pairwise"}
    assert with_sign(aligned, None)[0] < total - 1.0


def test_a_fixed_temperature_holds_for_every_term(tmp_path, fixture_plugins):
    """``learn_temperature: false`` also fixes the temperature of the extra pairwise term."""
    data = run_config(tmp_path, loss={"pairwise_weight": 0.5, "learn_temperature": False, "temperature": 0.1},
                      optim={"max_steps": 3, "lr": 0.05})
    data["data"]["val"] = None
    model_dir = train(parse_config(data, tmp_path))
    objective = load_file(str(latest_checkpoint(model_dir.parent) / "objective.safetensors"))
    assert {k for k in objective if k.endswith("log_t")} == {"contrastive.temperature.log_t",
                                                             "extras.pairwise.temperature.log_t"}
    for key in ("contrastive.temperature.log_t", "extras.pairwise.temperature.log_t"):
        assert objective[key].item() == pytest.approx(math.log(0.1))


def test_an_error_inside_the_loss_is_not_turned_into_a_zero_loss(tmp_path, fixture_plugins, monkeypatch):
    def broken(self, feats, masks=None):
        raise ValueError("a bug in the loss")

    monkeypatch.setattr(gramx.losses.contrastive.GramLoss, "forward", broken)
    data = run_config(tmp_path, optim={"max_steps": 2})
    with pytest.raises(ValueError, match="a bug in the loss"):
        train(parse_config(data, tmp_path))


def test_a_term_with_nothing_to_contrast_leaves_the_others_training(tmp_path, fixture_plugins):
    """Batches without the anchor give DAM nothing; the pairwise term still trains on them, and the log counts them."""
    import json as json_

    data = run_config(tmp_path, loss={"type": "pairwise_all", "anchor": "text", "dam_weight": 0.5},
                      optim={"max_steps": 6, "lr": 0.01}, data={"shuffle": False})
    data["data"]["val"] = None
    train_file = tmp_path / "train.jsonl"
    rows = [json_.loads(line) for line in train_file.read_text().splitlines()]
    for i, row in enumerate(rows):  # batches of 4: rows 4-7 and 12-15 have no text at all
        row["point"] = row.get("point") or [0.0] * 8
        if 4 <= i % 8 < 8:
            row["text"] = None
    train_file.write_text("".join(json_.dumps(r) + "\n" for r in rows))
    model_dir = train(parse_config(data, tmp_path))
    records = [json_.loads(line) for line in (model_dir.parent / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    without_text = [r for r in steps if r["step"] % 2 == 0]
    assert all(r["loss"] > 0.1 and "dam" not in r and r["batches_without"] == {"dam": 1} for r in without_text)
    assert all("dam" in r and "batches_without" not in r for r in steps if r["step"] % 2 == 1)
    training = json_.loads((model_dir / "config.json").read_text())["training"]
    assert training["batches_without"] == {"dam": 3}


@pytest.mark.parametrize("problem", ["missing val", "missing classes", "label without class", "misspelt column"])
def test_inputs_are_checked_before_the_first_step(tmp_path, fixture_plugins, problem):
    """What would fail at the first evaluation (hours in), or train a modality on nothing, fails at start."""
    import json as json_

    data = run_config(tmp_path, optim={"max_steps": 2}, eval={"metrics": ["retrieval", "zeroshot"]})
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\nthree\n")
    data["eval"]["classes"] = str(tmp_path / "classes.txt")
    expected = {"missing val": "manifest not found", "missing classes": "cannot read class names",
                "label without class": "label 3 has no class name", "misspelt column": "'vector'"}[problem]
    if problem == "missing val":
        data["data"]["val"] = str(tmp_path / "nowhere.jsonl")
    elif problem == "missing classes":
        data["eval"]["classes"] = str(tmp_path / "nowhere.txt")
    elif problem == "label without class":
        (tmp_path / "classes.txt").write_text("zero\none\ntwo\n")
    else:
        rows = [json_.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
        rows = [{("vectr" if k == "vector" else k): v for k, v in row.items()} for row in rows]
        (tmp_path / "train.jsonl").write_text("".join(json_.dumps(r) + "\n" for r in rows))
    with pytest.raises(GramxError, match=expected) as info:
        train(parse_config(data, tmp_path))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # not a single step
    if problem == "misspelt column":
        assert "no row has a value for the modality 'vector'" in str(info.value)
        assert "did you mean 'vector'?" in info.value.hint and "'vectr'" in info.value.hint


def test_resume_checks_the_inputs_again(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 2})
    train(parse_config(data, tmp_path))
    (tmp_path / "val.jsonl").unlink()
    with pytest.raises(GramxError, match="manifest not found"):
        train(parse_config(data, tmp_path), resume=True)


@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_a_bad_row_left_over_by_drop_last_is_reported(tmp_path, fixture_plugins, caplog, on_error):
    """26 rows in batches of 4: rows 25 and 26 never train (drop_last, no shuffle); row 26 is bad all the same."""
    data = run_config(tmp_path, n=26, data={"on_error": on_error, "shuffle": False}, optim={"epochs": 2})
    data["data"]["val"] = None
    (tmp_path / "vec" / "train-25.npy").write_bytes(b"broken")
    if on_error == "raise":
        with pytest.raises(DataError, match=r"train.jsonl line 26 \(vector\)"):
            train(parse_config(data, tmp_path))
        return
    with caplog.at_level("WARNING", logger="gramx.train"):
        model_dir = train(parse_config(data, tmp_path))
    assert "skipped 1 bad training rows: train.jsonl line 26 (vector)" in caplog.text
    assert json.loads((model_dir / "config.json").read_text())["training"]["skipped_rows"] == 1


def test_resume_latest_starts_fresh_then_continues(tmp_path, fixture_plugins):
    """``output.resume: latest``: the same command starts a run, and after a kill continues it."""
    data = run_config(tmp_path, optim={"max_steps": 4}, output={"checkpoint_every": 2, "resume": "latest"})
    data["data"]["val"] = None
    first = train(parse_config(data, tmp_path))  # nothing to resume: a fresh start
    reference = weights(first)
    for name in ("model", "checkpoints/step-00000004"):  # as if killed after the checkpoint at step 2
        shutil.rmtree(tmp_path / "run" / name)
    again = train(parse_config(data, tmp_path))
    assert all(torch.equal(reference[k], v) for k, v in weights(again).items())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    data["output"]["resume"] = "off"
    with pytest.raises(GramxError, match="already holds a run"):
        train(parse_config(data, tmp_path))


@pytest.mark.slow
def test_resume_latest_on_the_command_line(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 2})
    data["data"]["val"] = None
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-c", BOOT, "train", str(run_file), "--resume", "latest"]
    for _ in range(2):  # a fresh start, then a rerun of a finished run that changes nothing
        result = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr
