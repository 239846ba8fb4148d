"""gramx plugin: the ``depth`` modality.

Depth maps come from single-channel 16-bit PNGs (integer units, millimetres by default)
or ``.npy`` arrays (float metres or integer units). Each map becomes a float32
``[2, size, size]`` tensor: channel 0 is the normalised depth (0 where invalid), channel 1
the validity mask (1 = valid). A compact CNN encodes a batch to ``[B, feature_dim]``.
"""

from __future__ import annotations

from pathlib import Path

import gramx

from gramx_depth.config import DepthConfig
from gramx_depth.encoder import DepthEncoder, build_encoder
from gramx_depth.io import depth_to_tensor, load_depth, read_depth

__all__ = ["DEPTH", "DepthConfig", "DepthEncoder", "build_encoder", "depth_to_tensor", "load_depth", "read_depth"]
__version__ = "0.1.0"

SAMPLES_DIR = Path(__file__).parent / "samples"

DEPTH = gramx.Modality(
    name="depth",
    load=load_depth,
    build_encoder=build_encoder,
    config=DepthConfig,
    description="depth maps from 16-bit PNG or .npy (depth + validity mask, compact CNN)",
    value_is_path=True,
    samples=(str(SAMPLES_DIR / "sphere_mm.png"), str(SAMPLES_DIR / "cone_m.npy")),
)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(DEPTH)
