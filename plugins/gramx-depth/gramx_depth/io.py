"""Reading depth maps from 16-bit PNG and ``.npy`` files into a clean 2-channel tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gramx.errors import LoadError

from gramx_depth.config import DepthConfig

__all__ = ["EXTENSIONS", "read_depth", "depth_to_tensor", "load_depth"]

EXTENSIONS = (".png", ".npy")
# Pillow's modes for single-channel integer images (16-bit PNGs open as "I;16*" or "I").
_INT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def read_depth(value: Any, cfg: DepthConfig) -> np.ndarray:
    """Read one depth map as a float64 ``[H, W]`` array in metres (invalid pixels untouched).

    Raises :class:`gramx.LoadError` naming ``value`` when the file is missing, unreadable,
    not single-channel, or of an unsupported type.
    """
    path = Path(value)
    ext = path.suffix.lower()
    if not path.exists():
        raise LoadError(value, "file not found")
    if not path.is_file():
        raise LoadError(value, "not a file")
    if ext not in EXTENSIONS:
        raise LoadError(value, f"unsupported depth file type {ext or '(no extension)'!r}; use one of {', '.join(EXTENSIONS)}")
    raw = _read_png(path, value) if ext == ".png" else _read_npy(path, value)
    raw = _as_2d(raw, value)
    if raw.dtype.kind == "f":
        return raw.astype(np.float64) * cfg.float_scale
    return raw.astype(np.float64) * cfg.int_scale


def _read_png(path: Path, value: Any) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode not in _INT_MODES:
                kind = "8-bit grayscale" if mode == "L" else f"{mode}"
                raise LoadError(
                    value,
                    f"expected a single-channel 16-bit depth PNG, got a {kind} image (mode {mode!r})",
                    hint="save depth as 16-bit grayscale, e.g. Image.fromarray(depth_mm.astype(np.uint16)).save(path)",
                )
            return np.array(image)
    except LoadError:
        raise
    except UnidentifiedImageError:
        raise LoadError(value, "not a readable image (corrupt or not a PNG)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / broken PNG streams
        raise LoadError(value, f"corrupt PNG: {exc}") from None


def _read_npy(path: Path, value: Any) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for bad files
        raise LoadError(value, f"not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise LoadError(value, "expected a single array saved with numpy.save, got an archive")
    if array.dtype.kind not in "fiu":
        raise LoadError(value, f"unsupported dtype {array.dtype}; use a float or unsigned/signed integer array")
    return array


def _as_2d(array: np.ndarray, value: Any) -> np.ndarray:
    """Accept ``[H, W]``, ``[1, H, W]`` and ``[H, W, 1]``; anything else is an error."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise LoadError(value, f"expected a 2-D depth map [H, W], got shape {tuple(array.shape)}")
    if array.size == 0:
        raise LoadError(value, f"depth map is empty (shape {tuple(array.shape)})")
    return array


def depth_to_tensor(depth: np.ndarray, cfg: DepthConfig, source: Any = "<array>") -> torch.Tensor:
    """Metres ``[H, W]`` -> float32 ``[2, size, size]``: normalised depth and validity mask.

    Raises :class:`gramx.LoadError` naming ``source`` when no pixel is valid or the map's
    aspect ratio is beyond ``cfg.max_aspect``.
    """
    height, width = depth.shape
    if max(height, width) > cfg.max_aspect * min(height, width):
        raise LoadError(source, f"a {height}x{width} map (aspect ratio {max(height, width) / min(height, width):.3g}) "
                        f"is not a plausible depth map: the limit is max_aspect={cfg.max_aspect:g}",
                        hint="raise the depth option max_aspect if such maps are intended")
    finite = np.isfinite(depth)
    valid = finite & (depth > cfg.min_depth) & (depth <= cfg.max_depth)
    if not valid.any():
        raise LoadError(source, _why_no_valid(depth, finite, cfg))
    out = np.zeros_like(depth, dtype=np.float32)
    if cfg.normalize == "max_depth":
        out[valid] = depth[valid] / cfg.max_depth
    else:
        lo, hi = depth[valid].min(), depth[valid].max()
        out[valid] = (depth[valid] - lo) / (hi - lo) if hi - lo > 1e-9 else 0.0
    image = torch.from_numpy(np.stack([out, valid.astype(np.float32)]))
    if image.shape[-2:] != (cfg.size, cfg.size):
        # Nearest keeps the mask binary and never blends valid depth with invalid zeros.
        image = F.interpolate(image[None], size=(cfg.size, cfg.size), mode="nearest-exact")[0]
    return image.contiguous()


def _why_no_valid(depth: np.ndarray, finite: np.ndarray, cfg: DepthConfig) -> str:
    n = depth.size
    nan = int(np.isnan(depth).sum())
    if nan == n:
        return f"all {n} pixels are NaN"
    inf = int((~finite).sum()) - nan
    low = int((finite & (depth <= cfg.min_depth)).sum())
    high = int((finite & (depth > cfg.max_depth)).sum())
    parts = [f"{c} {what}" for c, what in (
        (low, f"<= min_depth ({cfg.min_depth} m, e.g. 0 = no reading)"),
        (nan, "NaN"), (inf, "infinite"), (high, f"beyond max_depth ({cfg.max_depth} m)"),
    ) if c]
    return f"no valid depth pixels among {n}: " + ", ".join(parts)


def load_depth(value: Any, cfg: DepthConfig) -> torch.Tensor:
    """The ``depth`` modality's loader: a file path -> float32 ``[2, size, size]``."""
    return depth_to_tensor(read_depth(value, cfg), cfg, source=value)
