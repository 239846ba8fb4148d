"""Frame encoders (CNN or transformers) and the image / video encoders built on them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gramx_video.config import FrameConfig, ImageConfig, VideoConfig

__all__ = ["FrameCNN", "HFFrameEncoder", "Jitter", "AttentionPool", "ImageEncoder", "VideoEncoder",
           "build_frame_encoder", "build_image_encoder", "build_video_encoder"]  # fmt: skip


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FrameCNN(nn.Module):
    """Compact CNN for RGB pictures: ``[N, 3, H, W]`` -> ``[N, feature_dim]``.

    A stride-2 3x3 conv stem (``channels[0]``), then one block per further entry of
    ``channels``: 3x3 conv + BatchNorm + ReLU + 2x2 max-pool; global average pooling and
    dropout. At the defaults (64x64 input) about 0.4 M parameters and 19 M multiply-adds
    per picture.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128, 256), dropout: float = 0.1):
        super().__init__()
        layers = _conv(3, channels[0], stride=2)
        for cin, cout in zip(channels, channels[1:]):
            layers += [*_conv(cin, cout), nn.MaxPool2d(2, ceil_mode=True)]
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = int(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layers(x).mean(dim=(2, 3)))


class HFFrameEncoder(nn.Module):
    """A transformers vision model from a local directory: ``[N, 3, H, W]`` -> ``[N, feature_dim]``.

    Uses the model's ``pooler_output`` when it has one, else the mean of
    ``last_hidden_state`` over tokens (ViT-like) or positions (CNN-like). For two-tower
    models (CLIP, SigLIP) the vision tower is used. ``pretrained_weights`` names the folder,
    so gramx stores frozen weights by reference and can add LoRA adapters.
    """

    def __init__(self, model_path: str, size: int, freeze: bool = False):
        super().__init__()
        from gramx_hf.towers import load_pretrained  # optional dependency: only for encoder='hf'

        model = load_pretrained(model_path)
        self.model = getattr(model, "vision_model", None) or model
        self.pretrained_weights = {"model.": str(Path(model_path).resolve())}
        if freeze:
            self.model.requires_grad_(False)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            self.feature_dim = int(self.forward(torch.zeros(1, 3, size, size)).shape[-1])
        self.model.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out[0]
        return hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)


class Jitter(nn.Module):
    """Training-time augmentation of normalised pictures, on whole batches.

    A random affine warp (rotation up to ``degrees``, scale by up to ``scale``, shift by up
    to ``shift`` of the side; borders replicate the edge) and brightness/contrast jitter.
    Never flips: a mirrored hand sign or text can mean something else. ``group`` consecutive
    pictures (the frames of one clip) share their parameters. Identity in eval mode.
    """

    def __init__(self, degrees: float = 10.0, scale: float = 0.1, shift: float = 0.1, color: float = 0.2):
        super().__init__()
        self.degrees, self.scale, self.shift, self.color = degrees, scale, shift, color

    def forward(self, x: torch.Tensor, group: int = 1) -> torch.Tensor:
        if not self.training:
            return x
        n = x.shape[0] // group

        def uniform(span: float, *shape: int) -> torch.Tensor:
            return ((torch.rand(n, *shape, device=x.device) * 2 - 1) * span).repeat_interleave(group, dim=0)

        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)
        theta = torch.cat([theta, uniform(2 * self.shift, 2).unsqueeze(-1)], dim=-1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        gain = 1 + uniform(self.color, 1, 1, 1).to(x.dtype)
        bias = uniform(self.color, 1, 1, 1).to(x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * gain + mean + bias


class AttentionPool(nn.Module):
    """Learned weighted average over time: ``[B, T, C]`` -> ``[B, C]``."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)
        return torch.einsum("bt,btc->bc", weights, x)


def build_frame_encoder(cfg: FrameConfig) -> nn.Module:
    """The per-picture encoder ``cfg`` asks for; exposes ``feature_dim``."""
    if cfg.encoder == "hf" and cfg.output == "projected":
        from gramx_hf.towers import TowerEncoder

        return TowerEncoder(cfg.model_path, "image", freeze=cfg.freeze)
    if cfg.encoder == "hf":
        return HFFrameEncoder(cfg.model_path, cfg.size, freeze=cfg.freeze)
    return FrameCNN(cfg.channels, cfg.dropout)


def _frames_weights(frames: nn.Module) -> dict[str, str]:
    """The frame encoder's ``pretrained_weights``, as seen from the image or video encoder holding it."""
    return {f"frames.{prefix}": folder for prefix, folder in getattr(frames, "pretrained_weights", {}).items()}


class ImageEncoder(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, feature_dim]``: augmentation (training only) + frame encoder."""

    def __init__(self, frames: nn.Module, augment: bool = True):
        super().__init__()
        self.frames = frames
        self.jitter = Jitter() if augment else None
        self.feature_dim = frames.feature_dim
        self.pretrained_weights = _frames_weights(frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.jitter is not None:
            x = self.jitter(x)
        return self.frames(x)


class VideoEncoder(nn.Module):
    """``[B, T, 3, H, W]`` -> ``[B, feature_dim]``: frame encoder on every frame, then temporal pooling.

    In training mode every frame of a clip gets the same augmentation.
    """

    def __init__(self, frames: nn.Module, pool: str = "mean", augment: bool = True):
        super().__init__()
        self.frames = frames
        self.jitter = Jitter() if augment else None
        self.pool = AttentionPool(frames.feature_dim) if pool == "attention" else None
        self.feature_dim = frames.feature_dim
        self.pretrained_weights = _frames_weights(frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        flat = x.flatten(0, 1)
        if self.jitter is not None:
            flat = self.jitter(flat, group=t)
        feats = self.frames(flat).view(b, t, -1)
        return self.pool(feats) if self.pool is not None else feats.mean(dim=1)


def build_image_encoder(cfg: ImageConfig) -> ImageEncoder:
    return ImageEncoder(build_frame_encoder(cfg), augment=cfg.augment)


def build_video_encoder(cfg: VideoConfig) -> VideoEncoder:
    return VideoEncoder(build_frame_encoder(cfg), pool=cfg.temporal_pool, augment=cfg.augment)
