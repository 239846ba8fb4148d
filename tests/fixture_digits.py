"""A small run on the digits data with the real plugins (audio + image + text), for the scale and serve tests.

The encoders are the built-in ones, BatchNorm and all, at the demo's small sizes; every
source of randomness inside the model (SpecAugment, jitter, dropout) is off unless a test
turns it on, so runs can be compared weight for weight.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "data" / "digits"


def digits_run(folder: Path, rows: int = 48, options: dict[str, dict] | None = None,
               names: tuple[str, ...] = ("audio", "image", "text"), **sections) -> Path:
    """Write the first ``rows`` training rows of the digits data (absolute paths) and a run file; returns it.

    ``names`` are the run's modalities, ``options`` updates their plugin options
    (``{"audio": {"crop": "random"}}``), ``sections`` the run file's sections.
    """
    lines = (DIGITS / "train.jsonl").read_text().splitlines()[:rows]
    records = [json.loads(line) for line in lines]
    for record in records:
        for name in ("audio", "image"):
            record[name] = str(DIGITS / record[name])
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {
        "modalities": {
            "audio": {"options": {"sample_rate": 8000, "duration": 0.8, "n_mels": 32, "window_ms": 32, "hop_ms": 20,
                                  "channels": [16, 32, 64], "spec_augment": False, "dropout": 0.0}},
            "image": {"options": {"size": 32, "channels": [16, 32, 64, 128], "augment": False, "dropout": 0.0}},
            "text": {"options": {"freeze": True}, "head": {"hidden": 64}},
        },
        "dim": 32,
        "loss": {"type": "gram", "anchor": "all", "pairwise_weight": 0.2},
        "data": {"train": "train.jsonl", "batch_size": 16, "workers": 0},
        "optim": {"lr": 1.0e-4, "max_steps": 6, "seed": 0},
        "output": {"dir": "run"},
        "logging": {"every": 1, "progress": False, "tensorboard": False},
        "device": "cpu",
    }
    config["modalities"] = {name: config["modalities"][name] for name in names}
    for name, values in (options or {}).items():
        config["modalities"][name]["options"].update(values)
    for key, value in sections.items():
        config[key].update(value) if isinstance(value, dict) else config.__setitem__(key, value)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment() -> dict:
    """The environment of a gramx subprocess: every installed plugin, offline, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k != "GRAMX_DISABLE_PLUGINS"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def gramx(*args: str, launcher: list[str] | None = None, cwd: Path, **popen) -> subprocess.Popen:
    """Start ``gramx ARGS`` (under ``launcher``, e.g. torchrun's arguments) in ``cwd``."""
    runner = [sys.executable, "-m", "torch.distributed.run", *launcher] if launcher else [sys.executable]
    return subprocess.Popen([*runner, "-m", "gramx", *args], cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for ``proc``; its output, after checking that it succeeded."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def largest_difference(a: Path, b: Path) -> tuple[float, str]:
    """The largest absolute difference between two model directories' tensors (weights and BatchNorm statistics)."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(((wa[k].double() - wb[k].double()).abs().max().item(), k) for k in wa)


def digits_collection(folder: Path, rows: int = 16) -> Path:
    """A manifest of the first ``rows`` test rows that have audio and image, their files copied beside it
    (relative paths, so the folder is the index's source folder); returns the manifest."""
    records = [json.loads(line) for line in (DIGITS / "test.jsonl").read_text().splitlines()]
    records = [r for r in records if "audio" in r and "image" in r][:rows]
    for record in records:
        for name in ("audio", "image"):
            (folder / record[name]).parent.mkdir(parents=True, exist_ok=True)
            (folder / record[name]).write_bytes((DIGITS / record[name]).read_bytes())
    manifest = folder / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def altered_copy(model: Path, folder: Path) -> Path:
    """A copy of the model directory ``model`` at ``folder`` with one bit of its weights flipped (another fingerprint)."""
    shutil.copytree(model, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    return folder


@dataclass(frozen=True)
class DigitsIndex:
    """A digits model, and an index of a collection whose files lie beside its manifest."""

    model: Path
    index: Path
    manifest: Path


def digits_index_in(folder: Path) -> DigitsIndex:
    """Train 2 steps on 32 rows (one torch thread), then index :func:`digits_collection` (16 rows) in ``folder``."""
    from gramx.cli import main
    from gramx.train.config import parse_config
    from gramx.train.loop import train

    run_file = digits_run(folder, rows=32, optim={"max_steps": 2})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train(parse_config(yaml.safe_load(run_file.read_text()), folder))
        (folder / "collection").mkdir()
        manifest = digits_collection(folder / "collection")
        assert main(["embed", str(model), str(manifest), "-o", str(folder / "index")]) == 0
    finally:
        torch.set_num_threads(threads)
    return DigitsIndex(model, folder / "index", manifest)
