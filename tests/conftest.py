"""Fixtures the core tests share: the fixture plugin, a free port, a model (built, or trained with its index and
shards), a digits model with an index of real files, the example third-party plugins installed.

(``one_thread`` is the repository's, in the root ``conftest.py``.) The modalities, data
makers and subprocess helpers the fixtures use live in :mod:`fixture_modalities`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

import fixture_modalities
from fixture_modalities import installed, run_config
from gramx.plugins import host as host_module


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


@pytest.fixture
def run(tmp_path, fixture_plugins):
    """The fixture plugin's 3-modality run file (``run_config``), parsed."""
    from gramx.train.config import parse_config

    return parse_config(run_config(tmp_path), tmp_path)


@pytest.fixture
def saved(tmp_path, run) -> Path:
    """The model directory of ``run``'s model as built (untrained), in ``tmp_path / "model"``."""
    from gramx.train.config import build_model

    return build_model(run).save_pretrained(tmp_path / "model")


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


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory) -> Path:
    """The example third-party plugins, pip-installed into a directory of their own.

    They are built from copies, so that setuptools' build/ folders never land in the source tree.
    """
    sources = tmp_path_factory.mktemp("sources")
    target = tmp_path_factory.mktemp("site")
    copies = [shutil.copytree(FIXTURES / name, sources / name) for name in ("gramx-imu", "gramx-broken")]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), *map(str, copies)],
        check=True, capture_output=True,
    )
    return target


@pytest.fixture
def host(site_dir, monkeypatch):
    """The plugin host with the example third-party plugins (``site_dir``) importable and none disabled."""
    monkeypatch.syspath_prepend(str(site_dir))
    monkeypatch.delenv(host_module.DISABLE_ENV, raising=False)
    host_module.reset()
    yield host_module.get_host()
    host_module.reset()


@pytest.fixture
def imu_csv(tmp_path) -> Path:
    """A sample for the example ``imu`` modality: 40 rows of 6 readings."""
    path = tmp_path / "walk.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(40, 6)), delimiter=",")
    return path


@pytest.fixture(scope="session")
def digits_index(tmp_path_factory):
    """A digits model (the real audio, image and text plugins) and an index of files beside it
    (:func:`fixture_digits.digits_index_in`)."""
    from fixture_digits import digits_index_in

    return digits_index_in(tmp_path_factory.mktemp("digits-index"))
