"""Options of the ``pointcloud`` modality."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PointCloudConfig"]


class PointCloudConfig(BaseModel):
    """How point clouds and meshes become a fixed-size, normalised ``[num_points, 3]`` tensor."""

    model_config = ConfigDict(extra="forbid")

    num_points: int = Field(1024, ge=1, description="points per sample (fewer are padded by repetition)")
    sampling: Literal["fps", "voxel"] = Field(
        "fps",
        description="fps: farthest-point sampling (even coverage); voxel: voxel-grid averaging "
        "with voxel_size, then a seeded random subset",
    )
    voxel_size: float = Field(0.02, gt=0, description="voxel edge for sampling='voxel', in unit-sphere units")
    mesh_samples: int = Field(4096, ge=1, description="points drawn uniformly from a mesh's surface before down-sampling")
    max_fps_input: int = Field(
        16384, ge=1, description="larger clouds are first cut to this many points (seeded random) before FPS"
    )
    seed: int = Field(0, description="seeds surface sampling and random subsets: a file always gives the same points")
    drop_nonfinite: bool = Field(False, description="drop NaN/inf points instead of failing to load the file")
    hidden: list[int] = Field(default_factory=lambda: [64, 128], description="widths of the shared MLP before the last layer")
    feature_dim: int = Field(256, ge=1, description="encoder output features (width of the last shared layer)")
