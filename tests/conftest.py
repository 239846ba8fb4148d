"""Fixtures the core tests share: the fixture plugin, a free port, a trained model with its index and shards,
a digits model with an index of real files.

(``one_thread`` is the repository's, in the root ``conftest.py``.) The modalities, data
makers and subprocess helpers the fixtures use live in :mod:`fixture_modalities`.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

import fixture_modalities
from fixture_modalities import installed, run_config


@pytest.fixture
def fixture_plugins(monkeypatch):
    """Only the fixture modalities are installed; torch uses one thread (fast, stable on 2 cores)."""
    from gramx.plugins import host

    names = {ep.name for ep in entry_points(group=host.ENTRY_POINT_GROUP)}
    monkeypatch.setenv(host.DISABLE_ENV, ",".join(sorted(names)) or "none")
    host.reset()
    host.register_plugin(sys.modules[fixture_modalities.__name__], name="fixture")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield host
    torch.set_num_threads(threads)
    host.reset()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """A function giving a free TCP port on localhost (a process group's rendezvous)."""
    return _free_port


@dataclass(frozen=True)
class Trained:
    """A tiny trained 3-modality model (fixture plugin), another of the same dimension, an index, shards."""

    folder: Path
    model: Path
    other: Path
    index: Path
    shards: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """Made once per session; tests that load the models take ``fixture_plugins`` too."""
    from gramx.cli import main
    from gramx.data.shards import write_shards
    from gramx.train.config import parse_config
    from gramx.train.loop import train

    folder = tmp_path_factory.mktemp("trained")
    with installed():
        data = run_config(folder, optim={"max_steps": 2})
        model = train(parse_config(data, folder))
        other = train(parse_config({**data, "optim": {**data["optim"], "seed": 9},
                                    "output": {"dir": str(folder / "other")}}, folder))
        assert main(["embed", str(model), str(folder / "val.jsonl"), "-o", str(folder / "index")]) == 0
        write_shards(folder / "val.jsonl", folder / "shards", shard_size=5, progress=False)
    return Trained(folder, model, other, folder / "index", folder / "shards")


@pytest.fixture(scope="session")
def digits_index(tmp_path_factory):
    """A digits model (the real audio, image and text plugins) and an index of files beside it
    (:func:`fixture_digits.digits_index_in`)."""
    from fixture_digits import digits_index_in

    return digits_index_in(tmp_path_factory.mktemp("digits-index"))
