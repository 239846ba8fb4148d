"""An index that cannot be verified, or whose files disagree with its record, is refused, naming the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gramx.cli import main
from gramx.errors import GramxError
from gramx.index.store import EmbeddingIndex


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


FORGERIES = {
    "a list": lambda r: [],
    "no ids": lambda r: {k: v for k, v in r.items() if k != "ids"},
    "ids not a list": lambda r: r.update(ids=5),
    "fewer ids than tuples": lambda r: r.update(ids=r["ids"][:3]),
    "a row past the end": lambda r: r["modalities"]["vector"].update(rows=[*r["modalities"]["vector"]["rows"][:-1], 99]),
    "a count that disagrees": lambda r: r["modalities"]["vector"].update(count=3),
    "a modality that is a string": lambda r: r["modalities"].update(vector="vector.npy"),
    "vectors outside the folder": lambda r: r["modalities"]["vector"].update(npy="../index/vector.npy"),
    "dim a string": lambda r: r["model"].update(dim="8"),
    "no model": lambda r: {k: v for k, v in r.items() if k != "model"},
}


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_index_json_is_an_error_naming_it(made, tmp_path, capsys, name):
    model, _, index = made
    copy = edited(index, tmp_path, FORGERIES[name])
    refused(capsys, search(model, copy, "--modality", "vector"), copy / "index.json")
    with pytest.raises(GramxError, match="index.json"):
        EmbeddingIndex.load(copy)


@pytest.mark.parametrize("text", [b"{", b"\xff\xfe{}", b"[" * 100_000])
def test_index_json_that_is_not_json_is_an_error_naming_it(made, tmp_path, capsys, text):
    model, _, index = made
    copy = edited(index, tmp_path, lambda r: None)
    (copy / "index.json").write_bytes(text)
    refused(capsys, search(model, copy), copy / "index.json")


VECTORS = {
    "shorter": lambda v: v[:5],
    "longer": lambda v: np.concatenate([v, v]),
    "another dim": lambda v: v[:, :4].copy(),
    "float64": lambda v: v.astype(np.float64),
}


@pytest.mark.parametrize("name", [*VECTORS, "pickled", "garbage"])
def test_vectors_that_disagree_with_the_record_are_refused(made, tmp_path, capsys, name):
    model, _, index = made
    copy = edited(index, tmp_path, lambda r: None)
    npy = copy / "vector.npy"
    if name == "pickled":
        np.save(npy, np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    elif name == "garbage":
        npy.write_bytes(b"\x93NUMPY garbage")
    else:
        np.save(npy, VECTORS[name](np.load(npy)))
    refused(capsys, search(model, copy, "--modality", "vector"), npy)
    with pytest.raises(GramxError, match="vector.npy"):
        EmbeddingIndex.load(copy)


def test_the_untouched_index_is_searched(made, capsys):
    model, _, index = made
    assert main(search(model, index, "--modality", "vector", "-k", "3", "--json")) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert len(EmbeddingIndex.load(index).vectors("vector")) == 12
