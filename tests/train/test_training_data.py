"""Training data: an epoch's order by seed and epoch, each process's share, micro-batches, left-over rows,
manifests and shards behind the same interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixture_modalities import run_config

from gramx.data.manifest import DataError, Manifest
from gramx.data.shard_reader import ShardSet
from gramx.data.shards import write_shards
from gramx.errors import GramxError
from gramx.runtime.distributed import DistContext
from gramx.train.config import build_model, parse_config
from gramx.train.training_data import open_training_data, read_run_files, read_training_rows


@pytest.fixture
def open_data(tmp_path, fixture_plugins):
    """``open_data(rank, world, accumulate, train, seed, **data)``: one process's planned training data.

    The training manifest has 26 rows (points missing from some), a noisy ``vector`` modality.
    """
    base = run_config(tmp_path, n=26, data={"batch_size": 4})
    base["modalities"]["vector"] = {"options": {"noise": 0.5}}
    model = build_model(parse_config(base, tmp_path))

    def open_(rank=0, world=1, accumulate=1, train=None, seed=0, **data):
        config = parse_config({**base, "data": {**base["data"], "train": str(train or base["data"]["train"]), **data},
                               "optim": {**base["optim"], "seed": seed, "accumulate": accumulate}}, tmp_path)
        training, _ = open_training_data(read_training_rows(config.data.train), model, config,
                                         DistContext(rank=rank, world_size=world))
        training.plan(accumulate)
        return training

    return open_


def rows_of(batches) -> list[int]:
    return [int(i) for batch in batches for i in batch]


def test_an_epochs_order_depends_only_on_the_seed_and_the_epoch(open_data):
    data = open_data()
    assert sorted(data.order(0).tolist()) == list(range(26))
    assert np.array_equal(data.order(3), open_data().order(3))  # another process, another resumed run
    assert not np.array_equal(data.order(3), data.order(4))
    assert not np.array_equal(data.order(3), open_data(seed=1).order(3))
    assert open_data(shuffle=False).order(3).tolist() == list(range(26))


def test_each_process_takes_every_world_th_row_so_global_batches_do_not_depend_on_the_processes(open_data):
    one = open_data(batch_size=8)
    ranks = [open_data(rank=r, world=2, batch_size=8) for r in range(2)]
    order = one.order(2)
    for r, data in enumerate(ranks):
        assert data.share(order).tolist() == order[r::2].tolist()
    assert len(one.batches(2)) == 3 and all(len(b) == 4 for data in ranks for b in data.batches(2))
    for k, batch in enumerate(one.batches(2)):
        assert sorted(batch.tolist()) == sorted(rows_of(data.batches(2)[k] for data in ranks))


@pytest.mark.parametrize("accumulate, drop_last, steps, sizes", [
    (1, True, 6, [4] * 6),
    (2, True, 3, [4] * 6),
    (4, True, 1, [4] * 4),  # six micro-batches: one step of four, two short of a second step
    (1, False, 7, [4] * 6 + [2]),
])
def test_micro_batches_are_fixed_slices_of_the_order(open_data, accumulate, drop_last, steps, sizes):
    data = open_data(accumulate=accumulate, drop_last=drop_last)
    assert data.plan(accumulate) == steps and data.micro_per_epoch == len(sizes)
    batches = data.batches(1)
    assert [len(b) for b in batches] == sizes
    assert rows_of(batches) == data.order(1)[:sum(sizes)].tolist()


def test_an_epoch_without_a_full_optimizer_step_is_refused(open_data):
    with pytest.raises(GramxError, match="an epoch has no full optimizer step: 26 tuples, batch size 4, accumulate 8"
                       ) as info:
        open_data(accumulate=8)
    assert info.value.hint == "lower data.batch_size or optim.accumulate"


@pytest.mark.parametrize("world, accumulate", [(1, 4), (2, 1), (2, 3), (3, 3)])
def test_every_row_is_trained_on_or_left_over_exactly_once(open_data, world, accumulate):
    seen, trained = [], []
    for rank in range(world):
        data = open_data(rank=rank, world=world, accumulate=accumulate, batch_size=2 * world)
        trained += rows_of(data.batches(5))
        seen += rows_of(data.batches(5)) + data.left_over(5).tolist()
    assert sorted(seen) == list(range(26))
    assert len(trained) == len(set(trained))


def test_a_loader_started_mid_epoch_gives_the_same_rows_and_samples(open_data):
    data = open_data()
    whole, resumed = list(data.loader(2, 0)), list(data.loader(2, 4))
    assert [b["index"].tolist() for b in whole] == [b.tolist() for b in data.batches(2)]
    assert len(resumed) == 2
    for a, b in zip(whole[4:], resumed):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["inputs"]["vector"], b["inputs"]["vector"])  # the same random augmentation
    loaded = data.load(2, data.batches(2)[5])
    assert torch.equal(torch.stack([item["values"]["vector"] for item in loaded]), whole[5]["inputs"]["vector"])


def test_shards_split_the_order_into_contiguous_parts_and_know_the_same_rows(open_data, tmp_path):
    shards = tmp_path / "shards"
    write_shards(tmp_path / "train.jsonl", shards, shard_size=5, progress=False)
    assert isinstance(read_training_rows(shards), ShardSet)
    assert isinstance(read_training_rows(tmp_path / "train.jsonl"), Manifest)
    manifest, streamed = open_data(), open_data(train=shards)
    assert [streamed.complete(n) for n in ("vector", "point", "text")] == \
        [manifest.complete(n) for n in ("vector", "point", "text")] == [True, False, False]
    order = streamed.order(1)
    assert sorted(order.tolist()) == list(range(26))
    for rank in range(2):
        share = open_data(rank=rank, world=2, train=shards, batch_size=8).share(order)
        assert share.tolist() == order[rank * 13:(rank + 1) * 13].tolist()


def test_the_run_files_are_read_before_training(tmp_path, fixture_plugins, caplog):
    data = run_config(tmp_path)
    del data["modalities"]["point"]
    config = parse_config(data, tmp_path)
    with caplog.at_level("WARNING", logger="gramx.train"):
        rows = read_run_files(config)
    assert len(rows) == 24 and "train.jsonl: columns not used by this run: point" in caplog.text
    assert "val.jsonl: columns not used by this run: point" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gramx.train"):
        read_run_files(config, warn=False)
    assert caplog.text == ""
    (tmp_path / "val.jsonl").unlink()
    with pytest.raises(DataError, match="val.jsonl"):
        read_run_files(config)
