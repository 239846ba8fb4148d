"""Bad input is refused by name: BOMs, empty or non-UTF-8 manifests, list labels, count options, edited or
damaged checkpoints, and errors raised in DataLoader workers (one line, the worker's traceback kept for --debug)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import types

import pytest
import torch
import yaml
from fixture_modalities import (  # noqa: F401
    POINT, TEXT, VECTOR, fixture_plugins, install, make_dataset, run_config, subprocess_env)
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset, IterableDataset

import gramx
from gramx import plugins
from gramx.cli import build_parser, main
from gramx.config import parse_config
from gramx.data import Collator, DataError, ManifestDataset, check_errors, read_manifest
from gramx.errors import GramxError, LoadError
from gramx.model import GramxModel
from gramx.train import latest_checkpoint, train
from gramx.workers import WorkerLoader, WorkerTraceback


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained 3-modality model directory (the fixture plugin's modalities)."""
    folder = tmp_path_factory.mktemp("model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(plugins.DISABLE_ENV, subprocess_env()[plugins.DISABLE_ENV])
        install()
        GramxModel.from_run_config(parse_config(run_config(folder), folder)).save_pretrained(folder / "model")
        yield folder / "model"
        plugins.reset()


def one_line_error(capsys) -> tuple[str, str]:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("gramx: error: ") and err[1].startswith("hint: "), err
    return err[0], err[1]


# ---------------------------------------------------------------- errors raised in DataLoader workers


class Failing(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise LoadError("clip-2.wav", "truncated header", hint="re-encode the file")
        return torch.zeros(2)


class FailingStream(IterableDataset):
    def __iter__(self):
        yield [torch.zeros(2)]
        raise ValueError("unexpected end of the tar\nat byte 512")


@pytest.mark.parametrize("dataset", [Failing(), FailingStream()], ids=["map-style", "iterable"])
def test_a_worker_error_arrives_as_itself_with_the_worker_traceback_as_its_cause(dataset):
    options = {"batch_size": None} if isinstance(dataset, IterableDataset) else {"batch_size": 2}
    with pytest.raises(Exception) as info:
        list(WorkerLoader(dataset, collate_fn=torch.utils.data.default_collate, num_workers=1, **options))
    if isinstance(dataset, Failing):
        assert type(info.value) is LoadError and str(info.value) == "clip-2.wav: truncated header"
        assert info.value.hint == "re-encode the file"
    else:
        assert type(info.value) is ValueError and str(info.value) == "unexpected end of the tar\nat byte 512"
    cause = info.value.__cause__
    assert isinstance(cause, WorkerTraceback) and f"in {'__getitem__' if isinstance(dataset, Failing) else '__iter__'}" \
        in cause.text and "Caught" not in str(info.value)


def broken_collate(samples, cfg):
    raise GramxError("cannot batch these texts", hint="give the modality a collate that pads")


@gramx.hookimpl
def register_broken_text(register):
    for modality in (VECTOR, POINT, dataclasses.replace(TEXT, collate=broken_collate)):
        register(modality)


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
    from gramx.plugins import get_modality

    path = make_dataset(tmp_path, n=4)
    (tmp_path / "vec" / "train-2.npy").write_bytes(b"not an array")
    mods = {"vector": (get_modality("vector"), get_modality("vector").default_config())}
    dataset = ManifestDataset(read_manifest(path), mods)
    batch = Collator(mods)([dataset[i] for i in range(4)])
    with pytest.raises(DataError, match=r"train.jsonl line 3 \(vector\)") as info:
        check_errors(batch, "raise")
    assert isinstance(info.value.__cause__, WorkerTraceback) and "in load_vector" in info.value.__cause__.text
