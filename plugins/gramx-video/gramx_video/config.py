"""Options of the ``image`` and ``video`` modalities; frames share one set of fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FrameConfig", "ImageConfig", "VideoConfig", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class FrameConfig(BaseModel):
    """How one picture (an image, or a frame of a video) is prepared and encoded."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(64, gt=0, description="the shorter side is resized to size, then the centre size x size is cut")
    mean: list[float] = Field(IMAGENET_MEAN, min_length=3, max_length=3, description="per-channel mean (RGB, 0-1)")
    std: list[float] = Field(IMAGENET_STD, min_length=3, max_length=3, description="per-channel std (RGB, 0-1)")
    encoder: Literal["cnn", "hf"] = Field(
        "cnn", description="'cnn': compact CNN trained from scratch; 'hf': a local transformers vision model"
    )
    channels: list[int] = Field(
        [16, 32, 64, 128, 256],
        min_length=1,
        description="cnn: width of the stride-2 stem, then of each conv block; the last is feature_dim",
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="cnn: dropout on the pooled features in training")
    augment: bool = Field(
        True,
        description="random affine jitter (rotation, scale, shift) and brightness/contrast in training mode; "
        "never flips",
    )
    model_path: Path | None = Field(
        None, description="hf: local directory of a transformers vision model (ViT, CLIP, DINOv2, ResNet, ...); relative: to the run file's folder"
    )
    freeze: bool = Field(False, description="hf: keep the pretrained weights fixed")
    output: Literal["pooled", "projected"] = Field(
        "pooled", description="hf: 'pooled': the vision model's pooled features; 'projected': the image embedding of "
        "a two-tower model (CLIP, SigLIP), exactly what its get_image_features gives (gramx-hf)"
    )
    preprocess: Literal["resize", "processor"] = Field(
        "resize", description="'resize': shorter side to size, centre crop, mean/std; 'processor': the image "
        "processor saved with the hf model in model_path (mean and std are then unused; video frames are decoded "
        "at size first, images are given to it whole)"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.encoder == "hf" and not self.model_path:
            raise ValueError("encoder='hf' needs model_path: a local directory with a transformers vision model")
        if self.encoder != "hf" and (self.output == "projected" or self.preprocess == "processor"):
            raise ValueError("output='projected' and preprocess='processor' need encoder='hf' and its model_path")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class ImageConfig(FrameConfig):
    """Options of the ``image`` modality (PNG, JPEG, ... via Pillow)."""


class VideoConfig(FrameConfig):
    """Options of the ``video`` modality (any container and codec FFmpeg decodes, via PyAV)."""

    num_frames: int = Field(8, gt=0, description="frames per clip")
    sampling: Literal["uniform", "segment"] = Field(
        "uniform",
        description="'uniform': num_frames evenly spaced frames, first and last included; "
        "'segment': the clip is cut into num_frames equal segments, one frame from each (TSN)",
    )
    jitter: bool = Field(
        False,
        description="segment: a random frame of each segment on every load (training augmentation) "
        "instead of the middle one",
    )
    temporal_pool: Literal["mean", "attention"] = Field(
        "mean", description="how per-frame features become one vector: 'mean' or learned 'attention' weights"
    )
