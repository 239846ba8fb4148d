"""The heads into the shared space: a modality's projection head, and a bridged modality's projector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gramx.errors import ConfigError
from gramx.model.schema import HeadConfig

__all__ = ["ProjectionHead", "Projector"]


class ProjectionHead(nn.Module):
    """Linear map (``hidden=0``), 2-layer MLP or identity from encoder features to the shared space.

    With ``batch_norm`` the output is standardised per dimension over the batch (no affine
    parameters, so no scale can shrink to zero): embeddings cannot collapse to one vector.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: HeadConfig):
        super().__init__()
        if cfg.identity:
            if in_dim != out_dim:
                raise ConfigError(f"an identity head needs encoder features of the space's size: the encoder gives "
                                  f"{in_dim}, the space has {out_dim}", hint="drop head.identity to learn a projection")
            self.net = nn.Identity()
        elif cfg.hidden:
            self.net = nn.Sequential(
                nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, out_dim)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_dim, out_dim))
        if cfg.batch_norm:
            self.net.append(nn.BatchNorm1d(out_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Residual(nn.Module):
    """``x + Linear-BN-ReLU-Linear-BN(x)``; the last BN starts at zero so the block is the identity."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.BatchNorm1d(dim)
        )
        nn.init.zeros_(self.mlp[-1].weight)

    def forward(self, x):
        return x + self.mlp(x)


class Projector(nn.Module):
    """Maps space B into space A: identity-initialised linear, residual MLP stack, L2-normalise.

    At construction it is the identity on unit vectors (for ``dim_in == dim_out``), so
    training starts from "the spaces already agree".
    """

    def __init__(self, dim_in: int, dim_out: int, hidden: int = 512, depth: int = 2):
        super().__init__()
        self.dim_in, self.dim_out, self.hidden, self.depth = dim_in, dim_out, hidden, depth
        self.linear = nn.Linear(dim_in, dim_out)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim_out, dim_in))
            self.linear.bias.zero_()
        self.blocks = nn.Sequential(*[_Residual(dim_out, hidden) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.blocks(self.linear(x)), dim=-1)

    def config(self) -> dict:
        """Constructor arguments, for ``config.json``."""
        return {"dim_in": self.dim_in, "dim_out": self.dim_out, "hidden": self.hidden, "depth": self.depth}
