"""A compact CNN for 2-channel (depth, validity) maps."""

from __future__ import annotations

import torch
from torch import nn

from gramx_depth.config import DepthConfig

__all__ = ["DepthEncoder", "build_encoder"]


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DepthEncoder(nn.Module):
    """Four stride-2 conv stages (``width``, 2x, 4x, ``feature_dim`` channels) and global
    average pooling: ``[B, 2, H, W] -> [B, feature_dim]``. Works for any ``H, W >= 1``."""

    def __init__(self, feature_dim: int = 256, width: int = 32, in_channels: int = 2):
        super().__init__()
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            _stage(in_channels, width),
            _stage(width, 2 * width),
            _stage(2 * width, 4 * width),
            _stage(4 * width, feature_dim),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(maps)).flatten(1)


def build_encoder(cfg: DepthConfig) -> DepthEncoder:
    """The ``depth`` modality's encoder for ``cfg``."""
    return DepthEncoder(feature_dim=cfg.feature_dim, width=cfg.width)
