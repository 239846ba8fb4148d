"""The loss table, objectives from run files, warm-ups, third-party loss types, and models scoring by their own loss."""

from __future__ import annotations

import json

import pytest
import torch
from fixture_modalities import run_config

import gramx
from gramx.train.config import parse_config
from gramx.errors import ConfigError
from gramx.evaluate.report import evaluate
from gramx.losses.contrastive import NothingToContrast, PairwiseInfoNCE
from gramx.model.model import load_model
from gramx.losses.table import LOSS_TYPES, LossType
from gramx.train.objective import build_objective, describe_loss
from gramx.train.loop import train


def objective_for(tmp_path, **loss):
    config = parse_config(run_config(tmp_path, loss=loss), tmp_path)
    return build_objective(config.loss, config.loss_type, list(config.modalities), config.dim), config


def feats(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.nn.functional.normalize(torch.randn(b, 8, generator=g), dim=-1) for n in ("point", "text", "vector")}


def test_every_built_in_type_builds_and_names_its_score(tmp_path, fixture_plugins):
    scores = {}
    for name, kind in LOSS_TYPES.items():
        objective, config = objective_for(tmp_path, type=name, anchor="text")
        total, parts = objective(feats())
        assert torch.isfinite(total) and set(parts) == {"contrastive"}
        scores[name] = kind.score
        assert describe_loss(config.loss, config.loss_type)
    assert scores == {"gram": "volume", "triangle": "area", "symile": "mip", "pairwise": "cosine",
                      "pairwise_all": "cosine", "pmrl": "singular", "confu": "cosine", "gated_symile": "mip"}


def test_run_file_errors_for_objectives(tmp_path, fixture_plugins):
    data = run_config(tmp_path, loss={"type": "triangel"})
    with pytest.raises(ConfigError, match="unknown loss.type 'triangel'; available: confu, gated_symile, gram, pair"):
        parse_config(data, tmp_path)
    data = run_config(tmp_path, loss={"type": "triangle"})
    data["modalities"] = {"point": {}, "text": {}}
    with pytest.raises(ConfigError, match="triangle needs exactly three modalities, the run has 2"):
        parse_config(data, tmp_path)
    data["loss"] = {"type": "confu"}
    with pytest.raises(ConfigError, match="confu needs 3 or more modalities, the run has 2: point, text"):
        parse_config(data, tmp_path)
    with pytest.raises(ConfigError, match="loss.anchor 'all' is not one of"):
        parse_config(run_config(tmp_path, loss={"type": "pairwise", "anchor": "all"}), tmp_path)


def test_a_pairwise_warm_up_decays_to_nothing(tmp_path, fixture_plugins):
    objective, config = objective_for(tmp_path, type="gram", anchor="text", pairwise_warmup=10)
    assert [objective.weight("pairwise", step) for step in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    assert objective.active_terms(3) == ["contrastive", "pairwise"] and objective.active_terms(10) == ["contrastive"]
    total, parts = objective(feats(), step=5)
    torch.testing.assert_close(total, parts["contrastive"] + 0.5 * parts["pairwise"])
    assert set(objective(feats(), step=12)[1]) == {"contrastive"}  # no longer computed
    assert "warm-up (weight 1.0 -> 0 over 10 steps)" in describe_loss(config.loss, config.loss_type)


def test_gram_trains_with_a_warm_up_and_its_model_scores_by_volume(tmp_path, fixture_plugins):
    data = run_config(tmp_path, loss={"type": "gram", "anchor": "text", "pairwise_warmup": 3},
                      optim={"max_steps": 6}, eval={"metrics": ["retrieval", "nway", "zeroshot"]})
    model_dir = train(parse_config(data, tmp_path))
    records = [json.loads(line) for line in (model_dir.parent / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert all("pairwise" in r for r in steps[:3]) and not any("pairwise" in r for r in steps[3:])
    assert not any("batches_without" in r for r in steps)  # a finished warm-up is not a missing term
    assert json.loads((model_dir / "config.json").read_text())["score"] == "volume"


@pytest.mark.parametrize("kind, score", [("triangle", "area"), ("symile", "mip"), ("pairwise", "cosine")])
def test_each_model_is_evaluated_and_searched_by_its_own_score(tmp_path, fixture_plugins, kind, score):
    data = run_config(tmp_path, loss={"type": kind, "anchor": "text"}, optim={"max_steps": 3})
    model_dir = train(parse_config(data, tmp_path))
    model = load_model(model_dir)
    assert model.score == score
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\nthree\n")
    report = evaluate(model, tmp_path / "val.jsonl", classes=str(tmp_path / "classes.txt"))
    assert report["score"] == score and set(report["nway"]) == set(report["nway_cosine"])
    if score == "cosine":  # the cosine score's n-way retrieval is the cosine-sum baseline itself
        assert report["nway"] == report["nway_cosine"]


@pytest.mark.parametrize("kind, score", [("pmrl", "singular"), ("confu", "cosine"), ("gated_symile", "mip")])
def test_the_newer_objectives_train_with_missing_modalities(tmp_path, fixture_plugins, kind, score):
    """PMRL, ConFu and gated Symile (their own modules' tests: losses/test_pmrl.py, losses/test_confu.py, losses/test_gated_symile.py)."""
    data = run_config(tmp_path, loss={"type": kind, "fusion_hidden": 16, "gate_dim": 8}, n=48, dim=16,
                      data={"batch_size": 8}, optim={"epochs": 6}, eval={"metrics": ["retrieval", "nway", "zeroshot"]})
    model_dir = train(parse_config(data, tmp_path))  # the training rows have missing modalities
    losses = [r["loss"] for r in map(json.loads, (model_dir.parent / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(losses) == 36 and sum(losses[-9:]) < 0.8 * sum(losses[:9])  # the last quarter against the first
    model = load_model(model_dir)
    assert model.score == score
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\nthree\n")
    report = evaluate(model, tmp_path / "val.jsonl", classes=str(tmp_path / "classes.txt"))
    assert report["score"] == score and report["nway"]["(point,vector)->text"]["R@1"] > 25  # four classes


def test_a_plugin_registers_a_loss_type(tmp_path, fixture_plugins):
    class Doubled:
        """A third-party objective: pairwise InfoNCE at twice the weight, scored by cosine."""

        @gramx.hookimpl
        def gramx_register_objectives(self, register):
            register("doubled", LossType(
                build=lambda cfg, t, options: PairwiseInfoNCE(anchor=None, temperature=t),
                describe=lambda cfg: "pairwise InfoNCE from a plugin", score="cosine"))

    status = gramx.register_plugin(Doubled(), name="doubled-plugin")
    assert status.status == "ok" and status.objectives == ["doubled"]
    data = run_config(tmp_path, loss={"type": "doubled"}, optim={"max_steps": 2})
    model_dir = train(parse_config(data, tmp_path))
    config = json.loads((model_dir / "config.json").read_text())
    assert config["score"] == "cosine" and config["training"]["loss"] == "pairwise InfoNCE from a plugin"

    class Clash:
        @gramx.hookimpl
        def gramx_register_objectives(self, register):
            register("gram", LOSS_TYPES["pairwise"])

    clash = gramx.register_plugin(Clash(), name="clash")
    assert clash.status == "error" and "'gram' is registered by both 'gramx' and plugin 'clash'" in clash.error


def test_an_objective_with_nothing_to_contrast_says_so(tmp_path, fixture_plugins):
    objective, _ = objective_for(tmp_path, type="triangle", anchor="text")
    masks = {name: torch.zeros(8, dtype=torch.bool) for name in ("point", "text", "vector")}
    with pytest.raises(NothingToContrast):
        objective(feats(), masks)
