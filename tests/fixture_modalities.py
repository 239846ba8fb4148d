"""Tiny, dependency-free modalities for the core tests (no real plugin is needed).

- ``vector``: a ``.npy`` file (or an inline list of numbers) -> a small MLP encoder.
- ``text``: a string -> hashed word ids -> an ``EmbeddingBag`` encoder (custom collate).

``install()`` blocks every installed plugin (``GRAMX_DISABLE_PLUGINS``) and registers these,
so tests never import the real plugins. Subprocesses call it through :data:`BOOT`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

import gramx
from gramx.errors import LoadError

HERE = Path(__file__).resolve().parent

#: Python code that installs the fixture plugin and runs the gramx command with sys.argv.
BOOT = (
    "import sys; sys.path.insert(0, {here!r}); import fixture_modalities as f; f.install(); "
    "from gramx.cli.app import main; sys.exit(main(sys.argv[1:]))"
).format(here=str(HERE))


class VectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = 8
    hidden: int = 16
    freeze: bool = False
    delay: float = 0.0  # seconds of sleep per load, to make runs slow enough to kill
    noise: float = 0.0  # random augmentation in load: Gaussian noise of this scale


def load_vector(value, cfg: VectorConfig) -> torch.Tensor:
    if cfg.delay:
        time.sleep(cfg.delay)
    if isinstance(value, list):
        x = np.asarray(value, dtype=np.float32)
    else:
        try:
            x = np.load(value).astype(np.float32)
        except FileNotFoundError:
            raise LoadError(value, "no such file") from None
        except Exception as exc:
            raise LoadError(value, f"not a .npy array ({type(exc).__name__})") from None
    if x.shape != (cfg.dim,):
        raise LoadError(str(value), f"expected {cfg.dim} numbers, got shape {x.shape}")
    sample = torch.from_numpy(x)
    return sample + cfg.noise * torch.randn(cfg.dim) if cfg.noise else sample


class VectorEncoder(nn.Module):
    def __init__(self, cfg: VectorConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.dim, cfg.hidden), nn.Tanh(), nn.Dropout(0.1))
        self.feature_dim = cfg.hidden
        if cfg.freeze:
            self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    buckets: int = 64
    hidden: int = 16
    freeze: bool = False


def load_text(value, cfg: TextConfig) -> torch.Tensor:
    if not isinstance(value, str):
        raise LoadError(repr(value), "text must be a string")
    words = value.lower().split() or [""]
    return torch.tensor([zlib.crc32(w.encode()) % cfg.buckets for w in words], dtype=torch.long)


def collate_text(samples: list[torch.Tensor], cfg: TextConfig) -> dict:
    offsets = torch.tensor([0] + [len(s) for s in samples[:-1]]).cumsum(0)
    return {"ids": torch.cat(samples), "offsets": offsets}


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.bag = nn.EmbeddingBag(cfg.buckets, cfg.hidden, mode="mean")
        self.feature_dim = cfg.hidden
        if cfg.freeze:
            self.requires_grad_(False)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.bag(batch["ids"], batch["offsets"])


VECTOR = gramx.Modality(name="vector", load=load_vector, build_encoder=VectorEncoder, config=VectorConfig,
                        description="test vectors (.npy)")
TEXT = gramx.Modality(name="text", load=load_text, build_encoder=TextEncoder, config=TextConfig,
                      collate=collate_text, value_is_path=False, description="test text (hashed words)")
# a second vector-like modality so that runs have three modalities
POINT = gramx.Modality(name="point", load=load_vector, build_encoder=VectorEncoder, config=VectorConfig,
                       description="test vectors, second kind")


@gramx.hookimpl
def gramx_register_modalities(register):
    register(VECTOR)
    register(TEXT)
    register(POINT)


def install() -> None:
    """Block installed plugins and register this module as the only plugin."""
    from gramx.plugins import host as plugins

    names = {ep.name for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)}
    if names:
        os.environ[plugins.DISABLE_ENV] = ",".join(sorted(names))
    plugins.reset()
    plugins.register_plugin(sys.modules[__name__], name="fixture")


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_dataset(folder: Path, n: int = 24, classes: int = 4, seed: int = 0, dim: int = 8,
                 name: str = "train.jsonl", missing: bool = False) -> Path:
    """Write a small labelled 3-modality JSONL manifest (vector files + inline points + text).

    Each class has a fixed random centre; items are centre + noise, so the task is learnable.
    ``missing=True`` leaves some modalities out of some rows (absent key or null).
    """
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(classes, 2, dim)).astype(np.float32)
    (folder / "vec").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        label = i % classes
        v = centres[label, 0] + 0.3 * rng.normal(size=dim).astype(np.float32)
        p = centres[label, 1] + 0.3 * rng.normal(size=dim).astype(np.float32)
        path = f"vec/{name.split('.')[0]}-{i}.npy"
        np.save(folder / path, v.astype(np.float32))
        row = {"id": f"r{i}", "label": label, "vector": path, "point": [round(float(x), 4) for x in p],
               "text": f"the digit {DIGITS[label]}"}
        if missing and i % 5 == 1:
            del row["point"]
        if missing and i % 5 == 3:
            row["text"] = None
        lines.append(json.dumps(row))
    out = folder / name
    out.write_text("\n".join(lines) + "\n")
    return out


def run_config(folder: Path, **sections) -> dict:
    """A small 3-modality run config (as a dict) on data made in ``folder``."""
    train = make_dataset(folder, n=sections.pop("n", 24), name="train.jsonl", missing=True)
    val = make_dataset(folder, n=12, seed=7, name="val.jsonl")
    config = {
        "modalities": {"vector": {}, "point": {}, "text": {}},
        "dim": 8,
        "data": {"train": str(train), "val": str(val), "batch_size": 4},
        "optim": {"epochs": 1, "lr": 0.01, "seed": 0},
        "output": {"dir": str(folder / "run")},
        "logging": {"progress": False, "tensorboard": False, "every": 1},
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value) if isinstance(value, dict) else config.__setitem__(key, value)
    return config


def edit_model_config(model_dir: Path, change) -> None:
    """Edit ``model_dir/config.json`` in place: ``change(config)`` mutates the parsed JSON."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def kill_at_checkpoint(proc, run_dir: Path, step: int, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``run_dir`` holds a checkpoint of ``step`` or later; then wait for it."""
    import signal

    from gramx.train.checkpoint import latest_checkpoint

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is not None and int(checkpoint.name.split("-")[1]) >= step:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)


def subprocess_env() -> dict:
    """Environment for a gramx subprocess: installed plugins blocked, one thread."""
    from gramx.plugins import host as plugins

    env = dict(os.environ)
    names = {ep.name for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)}
    env[plugins.DISABLE_ENV] = ",".join(sorted(names)) or "none"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def one_line_error(capsys) -> tuple[str, str]:
    """The two lines ``gramx`` printed for an error, ``(gramx: error: ..., hint: ...)``, checked for that form."""
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("gramx: error: ") and err[1].startswith("hint: "), err
    return err[0], err[1]


@contextmanager
def installed():
    """:func:`install` for a module-scoped fixture: installed plugins blocked until the block ends."""
    from gramx.plugins import host as plugins

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(plugins.DISABLE_ENV, subprocess_env()[plugins.DISABLE_ENV])
        install()
        yield
        plugins.reset()
