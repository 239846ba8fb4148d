"""Bad input is refused by name: BOMs, empty or non-UTF-8 manifests, list labels, and errors raised in training's
DataLoader workers (one line, the worker's traceback kept for --debug).

(Bad count options are in ``tests/cli/test_options.py``, edited or damaged checkpoints in
``tests/train/test_checkpoint.py``, the worker loader's own contract in ``tests/runtime/test_workers.py``.)"""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import yaml
from fixture_modalities import POINT, TEXT, VECTOR, installed, make_dataset, one_line_error, run_config

import gramx
from gramx.plugins import host as plugins
from gramx.cli.app import main
from gramx.train.config import parse_config
from gramx.data.loading import Collator, ManifestDataset, check_errors
from gramx.data.manifest import DataError, read_manifest
from gramx.errors import GramxError
from gramx.train.config import build_model
from gramx.runtime.workers import WorkerTraceback


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained 3-modality model directory (the fixture plugin's modalities)."""
    folder = tmp_path_factory.mktemp("model")
    with installed():
        build_model(parse_config(run_config(folder), folder)).save_pretrained(folder / "model")
        yield folder / "model"


# ---------------------------------------------------------------- manifests


def test_a_manifest_saved_with_a_byte_order_mark_keeps_its_first_column(tmp_path):
    (tmp_path / "rows.csv").write_bytes("id,text,label\na,the digit one,1\nb,the digit two,2\n".encode("utf-8-sig"))
    manifest = read_manifest(tmp_path / "rows.csv")
    assert [r.id for r in manifest.rows] == ["a", "b"] and manifest.columns == ["text"]
    (tmp_path / "rows.jsonl").write_bytes('{"id": "a", "text": "one"}\n'.encode("utf-8-sig"))
    assert [r.id for r in read_manifest(tmp_path / "rows.jsonl").rows] == ["a"]


def test_a_repeated_csv_column_is_an_error(tmp_path):
    (tmp_path / "rows.csv").write_text("id,text,text\na,one,two\n")
    with pytest.raises(DataError, match=r"rows.csv line 1: the header names the column 'text' twice"):
        read_manifest(tmp_path / "rows.csv")


@pytest.mark.parametrize("command", ["eval", "embed", "shards", "train"])
@pytest.mark.parametrize("content", ["", "\n\n", "id,text\n"], ids=["empty", "blank lines", "header only"])
def test_an_empty_manifest_is_refused_by_every_command(tmp_path, model_dir, fixture_plugins, capsys, command,
                                                       content):
    manifest = tmp_path / ("rows.csv" if content.startswith("id") else "rows.jsonl")
    manifest.write_text(content)
    out = str(tmp_path / "out")
    if command == "train":
        data = run_config(tmp_path)
        data["data"]["train"] = str(manifest)
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    args = {"eval": ["eval", str(model_dir), str(manifest)],
            "embed": ["embed", str(model_dir), str(manifest), "-o", out],
            "shards": ["shards", str(manifest), "-o", out],
            "train": ["train", str(tmp_path / "run.yaml")]}[command]
    assert main(args) == 1
    error, _ = one_line_error(capsys)
    assert str(manifest) in error and "no rows" in error
    assert not (tmp_path / "out").exists()


def test_bytes_that_are_not_utf8_name_their_line(tmp_path, model_dir, fixture_plugins, capsys):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_bytes(b'{"text": "one"}\n{"text": "two"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl line 3: not UTF-8 text"):
        read_manifest(manifest)
    assert main(["eval", str(model_dir), str(manifest)]) == 1
    error, hint = one_line_error(capsys)
    assert error == f"gramx: error: {manifest} line 3: not UTF-8 text" and "UTF-8" in hint


@pytest.mark.parametrize("label", [[1, 2], {"class": 1}])
def test_a_label_must_be_one_value(tmp_path, model_dir, fixture_plugins, capsys, label):
    manifest = make_dataset(tmp_path, n=4)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[2]["label"] = label
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(model_dir), str(manifest)]) == 1
    error, hint = one_line_error(capsys)
    assert f"{manifest} line 3: the label is a" in error and "one string or number" in hint


# ---------------------------------------------------------------- errors raised in DataLoader workers


def broken_collate(samples, cfg):
    raise GramxError("cannot batch these texts", hint="give the modality a collate that pads")


@gramx.hookimpl
def register_broken_text(register):
    for modality in (VECTOR, POINT, dataclasses.replace(TEXT, collate=broken_collate)):
        register(modality)


@pytest.mark.slow
def test_a_training_worker_error_is_one_line_and_its_traceback_is_kept_for_debug(tmp_path, fixture_plugins,
                                                                                  capsys):
    plugins.reset()
    plugins.register_plugin(types.SimpleNamespace(gramx_register_modalities=register_broken_text), name="broken")
    data = run_config(tmp_path, optim={"max_steps": 1}, data={"workers": 1})
    data["data"]["val"] = None
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(data))
    assert main(["train", str(run_file)]) == 1
    assert one_line_error(capsys) == ("gramx: error: cannot batch these texts",
                                      "hint: give the modality a collate that pads")
    with pytest.raises(GramxError) as info:
        main(["train", str(run_file), "--overwrite", "--debug"])
    assert isinstance(info.value.__cause__, WorkerTraceback) and "in broken_collate" in info.value.__cause__.text


def test_a_row_that_fails_to_load_keeps_the_plugin_traceback_for_debug(tmp_path, fixture_plugins):
    from gramx.plugins.host import get_modality

    path = make_dataset(tmp_path, n=4)
    (tmp_path / "vec" / "train-2.npy").write_bytes(b"not an array")
    mods = {"vector": (get_modality("vector"), get_modality("vector").default_config())}
    dataset = ManifestDataset(read_manifest(path), mods)
    batch = Collator(mods)([dataset[i] for i in range(4)])
    with pytest.raises(DataError, match=r"train.jsonl line 3 \(vector\)") as info:
        check_errors(batch, "raise")
    assert isinstance(info.value.__cause__, WorkerTraceback) and "in load_vector" in info.value.__cause__.text
