"""Shared fixtures: tiny CLIP, SigLIP and CLAP checkpoints, their imports, and media files to embed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from gramx_hf import import_space
from gramx_hf.testing import TINY_MODELS

TEXTS = ["a photo of a cat", "the sound of rain", "seven", "a red car drives by on a wet road"]


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every test here runs tiny models: torch on one thread (the repository's ``one_thread`` fixture)."""


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    """Architecture -> folder of a tiny random checkpoint, as `hf download` would leave it."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: save(root / name) for name, save in TINY_MODELS.items()}


@pytest.fixture(scope="session")
def imported(checkpoints, tmp_path_factory) -> dict:
    """Architecture -> the gramx model directory `gramx import` writes for it."""
    root = tmp_path_factory.mktemp("imported")
    return {name: import_space(folder, root / name) for name, folder in checkpoints.items()}


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Four images (various sizes), four 16 kHz recordings (at most 1 s) and a manifest of all of them."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    images, sounds, rows = [], [], []
    for i in range(4):
        image = root / f"image-{i}.png"
        Image.fromarray((rng.random((30 + 9 * i, 48, 3)) * 255).astype("uint8")).save(image)
        sound = root / f"sound-{i}.wav"
        sf.write(sound, (0.1 * rng.standard_normal(6000 + 3000 * i)).astype("float32"), 16000)
        images.append(str(image))
        sounds.append(str(sound))
        rows.append({"id": f"m{i}", "label": i, "text": TEXTS[i], "image": image.name, "audio": sound.name})
    (root / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "classes.txt").write_text("".join(t + "\n" for t in TEXTS))
    return {"root": root, "images": images, "sounds": sounds, "texts": TEXTS, "manifest": root / "all.jsonl",
            "classes": root / "classes.txt"}
