"""Picture geometry and normalisation shared by images and video frames."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["resized_shape", "center_crop", "to_tensor", "sample_indices"]


def resized_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after scaling the shorter side to ``size`` (aspect ratio kept)."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` of an ``[H, W, C]`` array at least that large."""
    h, w = array.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return array[top : top + size, left : left + size]


def to_tensor(array: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """``[..., H, W, 3]`` uint8 RGB -> ``[..., 3, H, W]`` float32, scaled to 0-1 and normalised."""
    x = torch.from_numpy(np.array(array, dtype=np.float32)).div_(255.0)  # a copy: decoded arrays are read-only
    x = x.movedim(-1, -3)
    shape = (3, 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def sample_indices(total: int, num_frames: int, sampling: str = "uniform", jitter: bool = False) -> list[int]:
    """Which of ``total`` frames to keep.

    - ``uniform``: ``num_frames`` evenly spaced indices from the first frame to the last.
    - ``segment`` (TSN): ``total`` is cut into ``num_frames`` equal segments; the middle frame
      of each, or with ``jitter`` a random frame of each.

    Clips shorter than ``num_frames`` repeat frames, so the result always has ``num_frames``
    indices, in order.
    """
    if total <= 0:
        raise ValueError("a clip needs at least one frame")
    if sampling == "uniform":
        if num_frames == 1:
            return [(total - 1) // 2]
        return [round(i * (total - 1) / (num_frames - 1)) for i in range(num_frames)]
    if sampling != "segment":
        raise ValueError(f"unknown sampling {sampling!r}")
    bounds = [i * total / num_frames for i in range(num_frames + 1)]
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        if jitter:
            first, last = int(np.ceil(lo)), int(np.ceil(hi)) - 1  # frames i with lo <= i < hi
            if last < first:  # fewer frames than segments
                first = last = int(lo)
            out.append(int(torch.randint(first, last + 1, ()).item()))
        else:
            out.append(int((lo + hi) / 2))
    return [min(i, total - 1) for i in out]
