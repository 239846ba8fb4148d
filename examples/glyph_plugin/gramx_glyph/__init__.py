"""A complete gramx modality plugin: 8x8 handwritten digit glyphs stored as ``.npy`` files."""

from pathlib import Path

import numpy as np
import pydantic
import torch

import gramx


class GlyphConfig(pydantic.BaseModel):
    """Options of the ``glyph`` modality (set under ``modalities.glyph`` in a run's YAML)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    hidden: int = 64


def load_glyph(path, cfg: GlyphConfig) -> torch.Tensor:
    """Read one 8x8 glyph (pixel values 0..16) as a ``[1, 8, 8]`` tensor in [0, 1]."""
    try:
        grid = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise gramx.LoadError(path, f"not a readable .npy file ({exc})") from exc
    if grid.shape != (8, 8):
        raise gramx.LoadError(path, f"expected an 8x8 glyph, got shape {grid.shape}")
    return torch.as_tensor(grid, dtype=torch.float32).div(16).unsqueeze(0)


class GlyphEncoder(torch.nn.Module):
    """Two conv layers and a pooled feature vector of size ``feature_dim``."""

    def __init__(self, cfg: GlyphConfig):
        super().__init__()
        self.feature_dim = cfg.hidden
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, cfg.hidden, 3, padding=1, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(gramx.Modality(
        name="glyph",
        load=load_glyph,
        build_encoder=GlyphEncoder,
        config=GlyphConfig,
        description="8x8 handwritten digit glyphs (.npy)",
        samples=[str(Path(__file__).with_name("sample-seven.npy"))],
    ))
