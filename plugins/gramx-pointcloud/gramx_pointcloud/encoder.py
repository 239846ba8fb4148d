"""A PointNet-style encoder: a shared per-point MLP followed by max-pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gramx_pointcloud.config import PointCloudConfig

__all__ = ["PointNetEncoder", "build_encoder"]


class PointNetEncoder(nn.Module):
    """``[B, N, 3] -> [B, feature_dim]``: 1x1 convolutions (3 -> hidden... -> feature_dim),
    each with BatchNorm and ReLU, then a max over points (order-invariant)."""

    def __init__(self, feature_dim: int = 256, hidden: Sequence[int] = (64, 128)):
        super().__init__()
        self.feature_dim = feature_dim
        widths = [3, *hidden, feature_dim]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv1d(cin, cout, kernel_size=1, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.mlp(points.transpose(1, 2)).amax(dim=2)


def build_encoder(cfg: PointCloudConfig) -> PointNetEncoder:
    """The ``pointcloud`` modality's encoder for ``cfg``."""
    return PointNetEncoder(feature_dim=cfg.feature_dim, hidden=cfg.hidden)
