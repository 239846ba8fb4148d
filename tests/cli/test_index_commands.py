"""The index commands (gramx.cli.index_commands) on tiny data: eval (table + JSON report), embed, search."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import ANY

import pytest
import torch

from gramx.cli import main
from gramx.index import EmbeddingIndex

METRICS = {"R@1", "R@5", "R@10", "MedR", "MeanR", "mAP"}


@pytest.fixture
def model(trained, fixture_plugins, tmp_path) -> Path:
    """The session's trained model (GRAM loss), with a class list for zero-shot in ``tmp_path``."""
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\nthree\n")
    return trained.model


def test_eval_json_is_the_contract_report(model, trained, tmp_path, capsys):
    code = main(["eval", str(model), str(trained.folder / "val.jsonl"), "--json",
                 "--classes", str(tmp_path / "classes.txt"), "--template", "the digit {}"])
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


def test_evaluate_library_call_equals_cli(model, trained, tmp_path, capsys):
    import gramx
    from gramx.evaluate.report import evaluate

    report = evaluate(gramx.load_model(model), trained.folder / "val.jsonl", classes=str(tmp_path / "classes.txt"),
                      template="the digit {}")
    main(["eval", str(model), str(trained.folder / "val.jsonl"), "--json",
          "--classes", str(tmp_path / "classes.txt"), "--template", "the digit {}"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))


def test_eval_table(model, trained, tmp_path, capsys):
    assert main(["eval", str(model), str(trained.folder / "val.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "12 tuples" in out and "vector->point" in out and "text->(point,vector)" in out


def test_embed_then_search(model, trained, tmp_path, capsys):
    model = str(model)
    out = tmp_path / "emb"
    assert main(["embed", model, str(trained.folder / "val.jsonl"), "-o", str(out)]) == 0
    index = EmbeddingIndex.load(out)
    assert len(index) == 12 and set(index.modalities) == {"point", "text", "vector"}
    vec, present = index.segments[0].read("vector", 0, 12)
    assert present.all() and torch.allclose(vec.norm(dim=1), torch.ones(12), atol=1e-5)
    assert index.find("r0") == (0, {"vector": str(trained.folder / "vec" / "val-0.npy"), "point": ANY, "text": ANY})
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
    query = trained.folder / "vec" / "val-2.npy"
    assert main(["search", model, "--index", str(out), "--query-file", str(query), "--query-modality", "vector",
                 "--modality", "point", "-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["rank", "id", "cosine"] and len(table) == 4
