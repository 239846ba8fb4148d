"""An index that cannot be verified, or whose files disagree with its record, is refused, naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from gramx.cli import main
from gramx.errors import GramxError
from gramx.index import EmbeddingIndex


@pytest.fixture
def made(trained, fixture_plugins):
    """An index made by one model, and a second model of the same dimension with other weights."""
    return trained.model, trained.other, trained.index


def edited(index, tmp_path, change):
    """A copy of ``index`` whose index.json ``change(record)`` edited in place, or replaced when it returns one."""
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    record = json.loads((copy / "index.json").read_text())
    replaced = change(record)
    record = record if replaced is None else replaced
    (copy / "index.json").write_text(json.dumps(record))
    return copy


def search(model, index, *options) -> list[str]:
    return ["search", str(model), "--index", str(index), "--query", "the digit two", *options]


def refused(capsys, args, file) -> str:
    """Run the command; it must fail with one error line that names ``file``, never a raw exception."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert str(file) in first and "Error:" not in first and "hint: run with --debug" not in err, err
    return err


def unverifiable(record):
    record["model"]["fingerprint"] = None


def before_fingerprints(record):
    record["model"] = record["model"]["path"]  # the form of gramx 0.1.0: the model's path only


@pytest.mark.parametrize("change", [unverifiable, before_fingerprints])
def test_an_index_without_the_models_fingerprint_is_refused(made, tmp_path, capsys, change):
    model, other, index = made
    copy = edited(index, tmp_path, change)
    err = refused(capsys, search(other, copy), copy / "index.json")  # another model: never searched
    assert "fingerprint" in err and "gramx embed MODEL" in err and f"-o {copy}" in err
    refused(capsys, search(model, copy), copy / "index.json")  # even its own: it cannot be checked
    with pytest.raises(GramxError, match="fingerprint"):
        EmbeddingIndex.load(copy)


def first_format(record):
    return {"format": "gramx-embeddings", "format_version": 1, "manifest": "/data/val.jsonl", "ids": [], "labels": []}


def test_an_index_of_the_first_format_is_refused_with_the_command_that_rebuilds_it(made, tmp_path, capsys):
    model, _, index = made
    copy = edited(index, tmp_path, first_format)
    err = refused(capsys, search(model, copy), copy / "index.json")
    assert "first format" in err and f"gramx embed MODEL /data/val.jsonl -o {copy} --overwrite" in err


FORGERIES = {
    "a list": lambda r: [],
    "no segments": lambda r: {k: v for k, v in r.items() if k != "segments"},
    "segments not a list": lambda r: r.update(segments=5),
    "a segment outside the folder": lambda r: r["segments"][0].update(name="../index/part-000000"),
    "a segment listed twice": lambda r: r.update(segments=r["segments"] * 2),
    "more rows than the segment holds": lambda r: r["segments"][0].update(rows=13),
    "fewer rows than the segment holds": lambda r: r["segments"][0].update(rows=3),
    "a dtype the vectors are not": lambda r: r.update(dtype="float16"),
    "a modality without files": lambda r: r.update(modalities=[*r["modalities"], "smell"]),
    "dim a string": lambda r: r["model"].update(dim="8"),
    "another dim": lambda r: r["model"].update(dim=16),
    "no model": lambda r: {k: v for k, v in r.items() if k != "model"},
}


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_index_json_is_an_error_naming_the_index(made, tmp_path, capsys, name):
    model, _, index = made
    copy = edited(index, tmp_path, FORGERIES[name])
    refused(capsys, search(model, copy, "--modality", "vector"), copy)
    with pytest.raises(GramxError, match=str(copy)):
        EmbeddingIndex.load(copy)


@pytest.mark.parametrize("text", [b"{", b"\xff\xfe{}", b"[" * 100_000])
def test_index_json_that_is_not_json_is_an_error_naming_it(made, tmp_path, capsys, text):
    model, _, index = made
    copy = edited(index, tmp_path, lambda r: None)
    (copy / "index.json").write_bytes(text)
    refused(capsys, search(model, copy), copy / "index.json")


FILES = {
    "vectors cut short": ("vector.vec", lambda b: b[:-4]),
    "vectors too long": ("vector.vec", lambda b: b + b),
    "presence cut short": ("vector.has", lambda b: b[:-1]),
    "the row table garbage": ("rows.sqlite", lambda b: b"SQLite format 3\x00" + b"\x01" * 100),
    "the row table empty": ("rows.sqlite", lambda b: b""),
}


@pytest.mark.parametrize("name", FILES)
def test_segment_files_that_disagree_with_the_record_are_refused(made, tmp_path, capsys, name):
    model, _, index = made
    copy = edited(index, tmp_path, lambda r: None)
    file, change = FILES[name]
    path = copy / "part-000000" / file
    path.write_bytes(change(path.read_bytes()))
    refused(capsys, search(model, copy, "--modality", "vector"), path)
    with pytest.raises(GramxError, match=file):
        EmbeddingIndex.load(copy)


def test_the_untouched_index_is_searched(made, capsys):
    model, _, index = made
    assert main(search(model, index, "--modality", "vector", "-k", "3", "--json")) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert len(EmbeddingIndex.load(index)) == 12 and EmbeddingIndex.load(index).rows_with("vector") == 12
