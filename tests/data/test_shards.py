"""Sharded data: `gramx shards` writes tar shards (never a file it must not copy); training streams them."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_modalities import BOOT, make_dataset, run_config, subprocess_env

from gramx.files.atomic import OutputExists
from gramx.cli import main
from gramx.train.config import parse_config
from gramx.data.manifest import DataError, read_manifest
from gramx.runtime.distributed import DistContext
from gramx.errors import ConfigError
from gramx.train.config import build_model
from gramx.data.shard_reader import read_shards
from gramx.data.shards import write_shards
from gramx.train.loop import train
from gramx.train.training_data import open_training_data, read_training_rows

VECTOR = io.BytesIO()
np.save(VECTOR, np.arange(8, dtype=np.float32))


@pytest.fixture
def data(tmp_path, fixture_plugins):
    """A 3-modality manifest with missing values (23 rows) and its shards (5 rows each)."""
    manifest = make_dataset(tmp_path, n=23, missing=True)
    write_shards(manifest, tmp_path / "shards", shard_size=5, progress=False)
    return manifest, tmp_path / "shards"


def batches(path, tmp_path, rank=0, world=1, epoch=0, skip=0, frozen_text=False, **sections):
    """The collated micro-batches one process's loader gives for ``path`` (manifest or shards)."""
    (tmp_path / "config").mkdir(exist_ok=True)  # run_config writes its own manifests there
    modalities = {"vector": {"options": {"noise": 0.5}}, "text": {"options": {"freeze": frozen_text}}}
    config = parse_config(run_config(tmp_path / "config", data={"train": str(path), "batch_size": 4 * world,
                                                                **sections}, modalities=modalities), tmp_path)
    torch.manual_seed(0)
    model = build_model(config)
    data, cache = open_training_data(read_training_rows(config.data.train), model, config,
                                     DistContext(rank=rank, world_size=world))
    assert set(cache.tables) == ({"text"} if frozen_text else set())
    data.plan(config.optim.accumulate)
    return list(data.loader(epoch, skip)), data


def assert_same(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x["index"], y["index"])
        assert x["masks"].keys() == y["masks"].keys()
        for name in x["masks"]:
            assert torch.equal(x["masks"][name], y["masks"][name]), name
            left, right = x["inputs"][name], y["inputs"][name]
            assert (left is None) == (right is None), name
            if isinstance(left, dict):
                assert all(torch.equal(left[k], right[k]) for k in left), name
            elif isinstance(left, list):  # the raw values of a cached modality
                assert left == right, name
            elif left is not None:
                assert torch.equal(left, right), name


def test_shards_hold_one_entry_per_present_modality_and_the_row(data, tmp_path):
    manifest, shards = data
    index = json.loads((shards / "shards.json").read_text())
    assert [s["rows"] for s in index["shards"]] == [5, 5, 5, 5, 3] and index["rows"] == 23
    with tarfile.open(shards / "000000.tar") as tar:
        names = tar.getnames()
        assert names[:4] == ["000000000.json", "000000000.point.value.json", "000000000.text.value.json",
                             "000000000.vector.npy"]
        assert tar.extractfile("000000000.vector.npy").read() == (tmp_path / "vec" / "train-0.npy").read_bytes()
    assert "000000001.point.value.json" not in names  # row 1 has no point: no entry
    shard_set = read_shards(shards)
    rows = [row for f in range(len(shard_set.files)) for row in shard_set.read(f)]
    source = read_manifest(manifest)
    assert [r.record.index for r in rows] == list(range(23))
    for stored, row in zip(rows, source.rows):
        assert (stored.record.id, stored.record.label, stored.record.line) == (row.id, row.label, row.line)
        assert sorted([*stored.files, *stored.values]) == sorted(row.values)  # the presence of every modality


@pytest.mark.parametrize("workers, frozen_text", [(0, False), (2, False), (2, True)])
def test_shards_and_manifest_feed_identical_batches(data, tmp_path, workers, frozen_text):
    """With a frozen caption encoder, both cache its features: the batches hold the captions themselves."""
    manifest, shards = data
    from_manifest, _ = batches(manifest, tmp_path, workers=workers, shuffle=False, frozen_text=frozen_text)
    from_shards, _ = batches(shards, tmp_path, workers=workers, shuffle=False, frozen_text=frozen_text)
    assert len(from_shards) == 5  # 23 rows, batches of 4
    assert_same(from_manifest, from_shards)  # rows, masks and the randomly augmented samples


@pytest.mark.slow
def test_shards_split_over_processes_and_workers_without_duplicates_or_gaps(data, tmp_path):
    manifest, shards = data
    seen = []
    for rank in range(2):
        loaded, plan = batches(shards, tmp_path, rank=rank, world=2, epoch=3, workers=2)
        assert len(loaded) == plan.micro_per_epoch == 2  # 11 rows per process: two batches of 4
        seen += [int(i) for batch in loaded for i in batch["index"]] + [int(i) for i in plan.left_over(3)]
    assert sorted(seen) == list(range(23))  # trained on or left over, each row exactly once
    order = [int(i) for i in read_shards(shards).epoch_order(0, 3, shuffle=True)]
    assert sorted(order) == list(range(23)) and order != list(range(23))


@pytest.mark.slow
def test_a_resumed_epoch_streams_the_same_batches(data, tmp_path):
    _, shards = data
    whole, _ = batches(shards, tmp_path, epoch=1, workers=2)
    resumed, _ = batches(shards, tmp_path, epoch=1, skip=2, workers=2)
    assert_same(whole[2:], resumed)
    other_epoch, _ = batches(shards, tmp_path, epoch=2, workers=2)
    assert not torch.equal(torch.cat([b["index"] for b in whole]), torch.cat([b["index"] for b in other_epoch]))


def test_training_from_shards_and_patterns(data, tmp_path):
    _, shards = data
    (tmp_path / "config").mkdir()
    config = run_config(tmp_path / "config", optim={"max_steps": 3})
    config["data"]["train"] = str(shards / "{000000..000003}.tar")  # 20 of the 23 rows
    model_dir = train(parse_config(config, tmp_path))
    assert json.loads((model_dir / "config.json").read_text())["training"]["train_tuples"] == 20
    config["output"]["dir"] = str(tmp_path / "run2")
    config["modalities"]["vector"] = {"preload": True}
    with pytest.raises(ConfigError, match="preload: shards are streamed"):
        train(parse_config(config, tmp_path))
    for pattern, problem in (("{000000..000009}.tar", "no shard 000005.tar"), ("../elsewhere.tar", "not shards")):
        with pytest.raises(DataError, match=problem):
            read_shards(shards / pattern)


def test_a_bad_entry_names_the_manifest_line_and_the_shard_entry(tmp_path, fixture_plugins, caplog):
    manifest = make_dataset(tmp_path, n=24)
    (tmp_path / "vec" / "train-5.npy").write_bytes(b"broken")
    write_shards(manifest, tmp_path / "shards", shard_size=10, progress=False)
    (tmp_path / "config").mkdir()
    config = run_config(tmp_path / "config", data={"on_error": "skip"}, optim={"epochs": 1})
    config["data"]["train"] = str(tmp_path / "shards")
    with caplog.at_level("WARNING", logger="gramx.train"):
        train(parse_config(config, tmp_path))
    assert "skipped 1 bad training rows: train.jsonl line 6 (vector): 000000.tar:000000005.vector.npy" in caplog.text


def test_the_shard_writer_follows_the_writer_rule(tmp_path, fixture_plugins, capsys):
    manifest = make_dataset(tmp_path, n=6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExists):
        write_shards(manifest, out, 4, progress=False)
    assert main(["shards", str(manifest), "-o", str(out), "--shard-size", "4", "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and sorted(p.name for p in out.iterdir()) == [
        "000000.tar", "000001.tar", "shards.json"]
    assert main(["shards", str(manifest), "-o", str(out), "--shard-size", "6"]) == 0  # a shard folder: replaced
    assert json.loads((out / "shards.json").read_text())["shard_size"] == 6
    (tmp_path / "vec" / "train-2.npy").unlink()
    assert main(["shards", str(manifest), "-o", str(out)]) == 1
    assert "train.jsonl line 3 (vector)" in capsys.readouterr().err
    assert main(["shards", str(manifest), "-o", str(out), "--on-error", "skip"]) == 0
    assert "skipped 1 bad rows" in capsys.readouterr().err
    rows = list(read_shards(out).read(0))  # a left-out row takes no position
    assert [r.record.index for r in rows] == [0, 1, 2, 3, 4] and [r.record.line for r in rows] == [1, 2, 4, 5, 6]


# ---------------------------------------------------------------- manifests from others: files the writer refuses


def manifest_of(folder: Path, values: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"vector": v}) + "\n" for v in values))
    return folder / "train.jsonl"


def no_temporary_folders(path: Path) -> bool:
    return not [p for p in path.iterdir() if p.name.startswith(".out.tmp-")]


@pytest.mark.slow
def test_the_writer_refuses_a_device_quickly_without_reading_it(tmp_path, fixture_plugins):
    """`/dev/zero` was read without end (12 GB in 10 s); memory is capped here so a regression fails, not the host."""
    manifest = manifest_of(tmp_path / "data", ["/dev/zero"])

    def cap_memory():
        import resource
        resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))

    result = subprocess.run([sys.executable, "-c", BOOT, "shards", str(manifest), "-o", str(tmp_path / "out")],
                            env=subprocess_env(), capture_output=True, text=True, timeout=300, preexec_fn=cap_memory)
    assert result.returncode == 1
    assert "train.jsonl line 1 (vector): /dev/zero: not a regular file" in result.stderr
    assert "Traceback" not in result.stderr and no_temporary_folders(tmp_path)


def test_the_writer_refuses_a_pipe_without_waiting_on_it(tmp_path, fixture_plugins):
    """A FIFO named in a manifest hung `gramx shards`; an alarm turns a regression into a failure."""
    os.makedirs(tmp_path / "data")
    os.mkfifo(tmp_path / "data" / "pipe.npy")
    manifest = manifest_of(tmp_path / "data", ["pipe.npy"])

    class Hung(BaseException):
        """Not an OSError (TimeoutError is one), so nothing on the way takes it for a read error."""

    def hung(signum, frame):
        raise Hung("gramx shards waits on the pipe")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with pytest.raises(DataError, match="line 1 .vector.: .*pipe.npy: not a regular file"):
            write_shards(manifest, tmp_path / "out", 4, progress=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert no_temporary_folders(tmp_path)


def test_files_outside_the_manifest_folder_need_allow_outside(tmp_path, fixture_plugins, capsys):
    """`/etc/passwd` or `~/.ssh/id_rsa` named in a manifest were copied into a shareable tar without a word."""
    (tmp_path / "secret.npy").write_bytes(VECTOR.getvalue())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inside.npy").symlink_to(tmp_path / "secret.npy")
    for value in [str(tmp_path / "secret.npy"), "../secret.npy", "inside.npy"]:
        manifest = manifest_of(tmp_path / "data", [value])
        with pytest.raises(DataError, match="outside the manifest's folder") as caught:
            write_shards(manifest, tmp_path / "out", 4, progress=False)
        assert "--allow-outside" in caught.value.hint and no_temporary_folders(tmp_path)
    assert main(["shards", str(manifest), "-o", str(tmp_path / "out")]) == 1
    assert "outside the manifest's folder" in capsys.readouterr().err
    assert main(["shards", str(manifest), "-o", str(tmp_path / "out"), "--allow-outside"]) == 0
    assert list(read_shards(tmp_path / "out").read(0))[0].files["vector"] == (".npy", VECTOR.getvalue())


def test_the_writer_stores_only_what_the_reader_takes(tmp_path, fixture_plugins):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.n py").write_bytes(VECTOR.getvalue())
    with pytest.raises(DataError, match="a.n py: its suffix cannot name a shard entry"):
        write_shards(manifest_of(tmp_path / "data", ["a.n py"]), tmp_path / "out", 4, progress=False)
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"vector": [0.0] * 8, "label": [1, 2]}) + "\n")
    with pytest.raises(DataError, match="label"):
        write_shards(tmp_path / "data" / "train.jsonl", tmp_path / "out", 4, progress=False)
    assert no_temporary_folders(tmp_path)


def test_an_interrupted_write_leaves_nothing_behind(tmp_path, fixture_plugins, monkeypatch):
    manifest = make_dataset(tmp_path, n=6)
    calls = []

    def interrupt(self, sample):
        calls.append(sample)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("webdataset.TarWriter.write", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_shards(manifest, tmp_path / "out", 4, progress=False)
    assert no_temporary_folders(tmp_path) and not (tmp_path / "out").exists()
