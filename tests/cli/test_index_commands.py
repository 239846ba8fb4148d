"""The gramx command end to end on tiny data: train, eval (table + JSON report), embed, search."""

from __future__ import annotations

import json
from unittest.mock import ANY

import pytest
import torch
import yaml
from fixture_modalities import installed, run_config, subprocess_env

from gramx.cli import main
from gramx.index import EmbeddingIndex

METRICS = {"R@1", "R@5", "R@10", "MedR", "MeanR", "mAP"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One model trained with ``gramx train`` for all tests of this module."""
    folder = tmp_path_factory.mktemp("cli")
    with installed():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        data = run_config(folder, optim={"epochs": 3})
        data["data"]["train"] = "train.jsonl"  # relative to the run file
        run_file = folder / "run.yaml"
        run_file.write_text(yaml.safe_dump(data))
        (folder / "classes.txt").write_text("zero\none\ntwo\nthree\n")
        assert main(["train", str(run_file), "--set", "optim.lr=0.02", "--device", "cpu"]) == 0
        yield folder
        torch.set_num_threads(threads)


def test_train_writes_a_model(trained, capsys):
    assert (trained / "run" / "model" / "config.json").is_file()
    run = yaml.safe_load((trained / "run" / "run.yaml").read_text())
    assert run["optim"]["lr"] == 0.02 and run["device"] == "cpu"


def test_eval_json_is_the_contract_report(trained, capsys):
    code = main(["eval", str(trained / "run" / "model"), str(trained / "val.jsonl"), "--json",
                 "--classes", str(trained / "classes.txt"), "--template", "the digit {}"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"tuples", "score", "retrieval", "nway", "nway_cosine", "zeroshot"}
    assert report["score"] == "volume"  # the run trained the GRAM loss
    assert report["tuples"] == 12
    names = ["point", "text", "vector"]
    assert set(report["retrieval"]) == {f"{a}->{b}" for a in names for b in names if a != b}
    assert set(report["nway"]) == {"point->(text,vector)", "text->(point,vector)", "vector->(point,text)",
                                   "(text,vector)->point", "(point,vector)->text", "(point,text)->vector"}
    assert set(report["nway_cosine"]) == set(report["nway"])
    for metrics in [*report["retrieval"].values(), *report["nway"].values(), *report["nway_cosine"].values()]:
        assert set(metrics) == METRICS
        assert 0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 100 and metrics["MedR"] >= 1
    assert set(report["zeroshot"]) == {"point", "vector"}
    assert all(0 <= acc <= 100 for acc in report["zeroshot"].values())


def test_evaluate_library_call_equals_cli(trained, capsys):
    import gramx
    from gramx.evaluate.report import evaluate

    model = gramx.load_model(trained / "run" / "model")
    report = evaluate(model, trained / "val.jsonl", classes=str(trained / "classes.txt"), template="the digit {}")
    main(["eval", str(trained / "run" / "model"), str(trained / "val.jsonl"), "--json",
          "--classes", str(trained / "classes.txt"), "--template", "the digit {}"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))


def test_eval_table(trained, capsys):
    assert main(["eval", str(trained / "run" / "model"), str(trained / "val.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "12 tuples" in out and "vector->point" in out and "text->(point,vector)" in out


def test_embed_then_search(trained, capsys):
    model = str(trained / "run" / "model")
    out = trained / "emb"
    assert main(["embed", model, str(trained / "val.jsonl"), "-o", str(out)]) == 0
    index = EmbeddingIndex.load(out)
    assert len(index) == 12 and set(index.modalities) == {"point", "text", "vector"}
    vec, present = index.segments[0].read("vector", 0, 12)
    assert present.all() and torch.allclose(vec.norm(dim=1), torch.ones(12), atol=1e-5)
    assert index.find("r0") == (0, {"vector": str(trained / "vec" / "val-0.npy"), "point": ANY, "text": ANY})
    capsys.readouterr()

    # text query against single-modality candidates (cosine)
    assert main(["search", model, "--index", str(out), "--query", "the digit two", "--modality", "vector",
                 "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["candidates"] == ["vector"] and len(result["results"]) == 3
    scores = [r["cosine"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)

    # text query against (point, vector) tuples (Gram volume via VolumeIndex)
    assert main(["search", model, "--index", str(out), "--query", "the digit two", "-k", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["candidates"] == ["point", "vector"]
    volumes = [r["volume"] for r in result["results"]]
    assert volumes == sorted(volumes) and len(volumes) == 4

    # a file query with its modality, printed as a table
    query = trained / "vec" / "val-2.npy"
    assert main(["search", model, "--index", str(out), "--query-file", str(query), "--query-modality", "vector",
                 "--modality", "point", "-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["rank", "id", "cosine"] and len(table) == 4


@pytest.mark.slow
def test_progress_is_a_line_per_interval_when_not_a_terminal(tmp_path):
    """Piped to a log, training prints plain lines (no carriage-return bar updates)."""
    import subprocess
    import sys

    from fixture_modalities import BOOT

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
