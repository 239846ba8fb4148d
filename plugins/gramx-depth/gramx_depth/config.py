"""Options of the ``depth`` modality."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DepthConfig"]


class DepthConfig(BaseModel):
    """How depth maps are read, cleaned, resized and encoded.

    Depth is converted to metres first: integer maps (16-bit PNG, integer ``.npy``) are
    multiplied by ``int_scale``, float maps (float ``.npy``) by ``float_scale``. A pixel is
    *invalid* when it is NaN, infinite, ``<= min_depth`` or ``> max_depth``; invalid pixels
    are 0 in the depth channel and 0 in the mask channel.
    """

    model_config = ConfigDict(extra="forbid")

    int_scale: float = Field(0.001, gt=0, description="metres per unit of integer maps (0.001: millimetres)")
    float_scale: float = Field(1.0, gt=0, description="metres per unit of float maps (1.0: already metres)")
    min_depth: float = Field(0.0, ge=0, description="depths <= this (metres) are invalid; 0 marks 'no reading'")
    max_depth: float = Field(10.0, gt=0, description="depths > this (metres) are invalid")
    normalize: Literal["max_depth", "per_image"] = Field(
        "max_depth",
        description="max_depth: depth / max_depth (keeps absolute scale); "
        "per_image: valid depths min-max scaled to [0, 1] per map (keeps only shape)",
    )
    size: int = Field(64, ge=8, le=1024, description="output maps are size x size (nearest-neighbour resize)")
    max_aspect: float = Field(
        4.0, ge=1, description="longest side / shortest side a map may have; beyond it the file is rejected "
        "(sensors give 4:3 to 2:1; a 1x500 image is not a depth map, and squeezing it to size x size would hide that)",
    )
    width: int = Field(32, ge=4, le=512, description="channels of the encoder's first stage (doubles per stage)")
    feature_dim: int = Field(256, ge=1, description="encoder output features")

    @model_validator(mode="after")
    def _range(self) -> DepthConfig:
        if self.max_depth <= self.min_depth:
            raise ValueError(f"max_depth ({self.max_depth}) must be greater than min_depth ({self.min_depth})")
        return self
