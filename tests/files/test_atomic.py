"""Every writer refuses what it did not make, replaces its own kind, and uses the user's umask."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from fixture_modalities import installed, run_config

from gramx.files.atomic import OutputExists
from gramx.cli import main
from gramx.train.config import parse_config
from gramx.errors import GramxError
from gramx.extend.grow import add_modalities, bridge_spaces, load_bridge_config
from gramx.model.model import load_model
from gramx.train.config import build_model
from gramx.train.loop import train


def occupied(tmp_path, kind: str):
    """A folder holding someone's notes, or a plain file."""
    if kind == "folder":
        path = tmp_path / "taken"
        path.mkdir()
        (path / "notes.txt").write_text("my notes")
    else:
        path = tmp_path / "README.md"
        path.write_text("my readme")
    return path


def untouched(path) -> bool:
    if path.is_dir():
        return (path / "notes.txt").read_text() == "my notes" and [p.name for p in path.iterdir()] == ["notes.txt"]
    return path.read_text() == "my readme"


@pytest.fixture
def model(tmp_path, fixture_plugins):
    return build_model(parse_config(run_config(tmp_path), tmp_path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for 2 steps, for the CLI writers (embed, extend)."""
    folder = tmp_path_factory.mktemp("outputs")
    with installed():
        data = run_config(folder, optim={"max_steps": 2})
        yield folder, data, train(parse_config(data, folder))


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_save_pretrained_refuses_what_is_not_a_model(tmp_path, model, kind):
    path = occupied(tmp_path, kind)
    with pytest.raises(OutputExists, match="does not replace it") as info:
        model.save_pretrained(path)
    assert "--overwrite" in info.value.hint and untouched(path)
    model.save_pretrained(path, overwrite=True)  # insisting replaces it
    assert load_model(path).dim == model.dim
    model.save_pretrained(path)  # a model directory is replaced without asking
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_embed_refuses_what_is_not_an_index(trained, tmp_path, kind, capsys, caplog, fixture_plugins):
    folder, _, model_dir = trained
    path = occupied(tmp_path, kind)
    assert main(["embed", str(model_dir), str(folder / "val.jsonl"), "-o", str(path)]) == 1
    err = capsys.readouterr().err
    assert "does not replace it" in err and "--overwrite" in err and untouched(path)
    assert main(["embed", str(model_dir), str(folder / "val.jsonl"), "-o", str(path), "--overwrite"]) == 0
    assert (path / "index.json").is_file()
    caplog.clear()
    assert main(["embed", str(model_dir), str(folder / "val.jsonl"), "-o", str(path)]) == 0  # its own kind
    assert f"replacing {path} with a new gramx embedding index" in caplog.text


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_train_refuses_an_output_folder_it_did_not_make(tmp_path, fixture_plugins, kind):
    path = occupied(tmp_path, kind)
    data = run_config(tmp_path, optim={"max_steps": 1}, output={"dir": str(path)})
    with pytest.raises(OutputExists):
        train(parse_config(data, tmp_path))
    assert untouched(path)
    model_dir = train(parse_config(data, tmp_path), overwrite=True)
    assert model_dir == path / "model" and not (path / "notes.txt").exists()
    assert json.loads((path / "gramx-run.json").read_text())["format"] == "gramx-run"
    with pytest.raises(GramxError, match="already holds a run") as info:
        train(parse_config(data, tmp_path))
    assert "--overwrite" in info.value.hint
    train(parse_config(data, tmp_path), overwrite=True)  # start the run again


def test_a_run_file_placed_in_its_own_output_folder_is_never_overwritten(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 1}, output={"dir": "."})
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(data))
    before = run_file.read_text()
    with pytest.raises(OutputExists):
        main(["train", str(run_file), "--debug"])
    assert run_file.read_text() == before


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_extend_add_and_bridge_refuse_foreign_outputs(trained, tmp_path, fixture_plugins, kind):
    folder, data, model_dir = trained
    path = occupied(tmp_path, kind)
    grown = {**data, "modalities": {**data["modalities"]}, "output": {"dir": str(path)}}
    with pytest.raises(OutputExists):
        add_modalities(model_dir, parse_config(grown, folder))
    bridge = tmp_path / "bridge.yaml"
    bridge.write_text(yaml.safe_dump({"base": str(model_dir), "leaf": str(model_dir), "pools": {},
                                      "output": str(path)}))
    with pytest.raises(OutputExists):  # refused before any work (the config itself would fail later)
        bridge_spaces(load_bridge_config(bridge))
    assert untouched(path)


def test_written_files_follow_the_umask(trained, tmp_path, fixture_plugins):
    folder, _, model_dir = trained
    previous = os.umask(0o022)
    try:
        assert main(["embed", str(model_dir), str(folder / "val.jsonl"), "-o", str(tmp_path / "index")]) == 0
        load_model(model_dir).save_pretrained(tmp_path / "model")
    finally:
        os.umask(previous)
    for root in (tmp_path / "index", tmp_path / "model"):
        assert stat.S_IMODE(root.stat().st_mode) == 0o755
        for entry in root.rglob("*"):
            assert stat.S_IMODE(entry.stat().st_mode) == (0o755 if entry.is_dir() else 0o644), entry


def test_search_refuses_an_index_made_by_another_model(trained, tmp_path, fixture_plugins, capsys):
    folder, data, model_dir = trained
    other_dir = train(parse_config({**data, "optim": {**data["optim"], "seed": 9},
                                    "output": {"dir": str(tmp_path / "other")}}, folder))
    wider_dir = train(parse_config({**data, "dim": 16, "output": {"dir": str(tmp_path / "wider")}}, folder))
    index = tmp_path / "index"
    assert main(["embed", str(model_dir), str(folder / "val.jsonl"), "-o", str(index)]) == 0
    capsys.readouterr()
    query = ["--index", str(index), "--query", "the digit two"]
    assert main(["search", str(model_dir), *query]) == 0  # its own model
    capsys.readouterr()
    assert main(["search", str(other_dir), *query]) == 1  # same dimension, other weights
    err = capsys.readouterr().err
    assert str(model_dir) in err and str(other_dir) in err and "made by" in err
    assert main(["search", str(wider_dir), *query]) == 1  # another dimension: no raw shape error
    err = capsys.readouterr().err
    assert "8 dimensions" in err and "16" in err and "mat1" not in err
    copy = load_model(model_dir).save_pretrained(tmp_path / "copy")  # a copy is the same model
    assert main(["search", str(copy), *query]) == 0
