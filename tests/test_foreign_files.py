"""Replacing an artefact never deletes what the user put inside it: writers know their own files."""

from __future__ import annotations

import json
import shutil

import pytest
from fixture_modalities import installed, run_config

from gramx.files.atomic import OutputExists
from gramx.cli import main
from gramx.train.config import parse_config
from gramx.model.model import load_model
from gramx.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for 2 steps."""
    folder = tmp_path_factory.mktemp("foreign")
    with installed():
        yield folder, train(parse_config(run_config(folder, optim={"max_steps": 2}), folder))


def test_export_over_a_model_folder_keeps_the_notes_and_index_inside(trained, tmp_path, capsys, fixture_plugins):
    folder, model_dir = trained
    shared = tmp_path / "shared"
    assert main(["export", str(model_dir), "-o", str(shared)]) == 0
    (shared / "NOTES.txt").write_text("my notes")
    assert main(["embed", str(shared), str(folder / "val.jsonl"), "-o", str(shared / "idx")]) == 0
    index = (shared / "idx" / "index.json").read_text()
    capsys.readouterr()

    assert main(["export", str(model_dir), "-o", str(shared)]) == 1
    err = capsys.readouterr().err
    assert "NOTES.txt" in err and "idx/" in err and "--overwrite" in err
    assert (shared / "NOTES.txt").read_text() == "my notes" and (shared / "idx" / "index.json").read_text() == index
    assert main(["search", str(shared), "--index", str(shared / "idx"), "--query", "two"]) == 0  # both still work
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left

    shutil.rmtree(shared / "idx")  # the library writer refuses the notes alone just the same
    with pytest.raises(OutputExists, match="NOTES.txt") as info:
        load_model(model_dir).save_pretrained(shared)
    assert "deleting them" in info.value.hint and (shared / "NOTES.txt").is_file()

    assert main(["export", str(model_dir), "-o", str(shared), "--overwrite"]) == 0  # insisting replaces it all
    assert not (shared / "NOTES.txt").exists() and (shared / "config.json").is_file()
    assert main(["export", str(model_dir), "-o", str(shared)]) == 0  # gramx's own files alone: replaced


def test_embed_over_an_index_keeps_the_users_files(trained, tmp_path, capsys, fixture_plugins):
    folder, model_dir = trained
    index = tmp_path / "index"
    embed = ["embed", str(model_dir), str(folder / "val.jsonl"), "-o", str(index)]
    assert main(embed) == 0
    (index / "notes").mkdir()
    (index / "notes" / "a.txt").write_text("mine")
    (index / "link.npy").symlink_to(folder / "val.jsonl")  # a link is never gramx's, whatever its name
    capsys.readouterr()
    assert main(embed) == 1
    err = capsys.readouterr().err
    assert "link.npy" in err and "notes/" in err
    assert (index / "notes" / "a.txt").read_text() == "mine" and (folder / "val.jsonl").is_file()


def test_a_run_folder_with_the_users_files_is_not_removed(tmp_path, fixture_plugins):
    data = run_config(tmp_path, optim={"max_steps": 1})
    out = tmp_path / "run"
    out.mkdir()
    (out / "gramx-run.json").write_text(json.dumps({"format": "gramx-run"}))  # a run that never got far
    (out / "NOTES.txt").write_text("my notes")
    with pytest.raises(OutputExists, match="NOTES.txt"):
        train(parse_config(data, tmp_path))
    assert (out / "NOTES.txt").read_text() == "my notes"
