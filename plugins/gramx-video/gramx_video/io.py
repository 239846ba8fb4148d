"""Decoding pictures: images with Pillow, video frames with PyAV (FFmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gramx import LoadError
from gramx_video.containers import declared_size
from gramx_video.frames import center_crop, resized_shape, sample_indices

__all__ = ["open_image", "read_image", "read_video"]


def _existing(value: str | os.PathLike) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise LoadError(repr(value), f"expected a file path, got {type(value).__name__}")
    path = Path(value)
    if not path.exists():
        raise LoadError(path, "file not found")
    if not path.is_file():
        raise LoadError(path, "not a file")
    return path


def _rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparent pixels become white, 16-bit grey is scaled to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        grey = (np.asarray(img, dtype=np.float32) / 257.0).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(value: str | os.PathLike) -> Image.Image:
    """Decode an image -> an RGB Pillow image at its own size, EXIF orientation applied.

    Raises :class:`gramx.LoadError` naming the file when it is missing, not an image,
    truncated, corrupt or empty.
    """
    path = _existing(value)
    try:
        with Image.open(path) as img:
            img.load()  # decodes now: truncated or corrupt data fails here
            rgb = _rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as exc:
        raise LoadError(path, "not an image file Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise LoadError(path, f"cannot decode image: {exc}") from exc
    if min(rgb.size) == 0:
        raise LoadError(path, "image has no pixels")
    return rgb


def read_image(value: str | os.PathLike, size: int) -> np.ndarray:
    """Decode an image -> ``[size, size, 3]`` uint8 RGB (shorter side to ``size``, centre crop).

    EXIF orientation is applied; errors as :func:`open_image`'s.
    """
    rgb = open_image(value)
    width, height = resized_shape(*rgb.size, size)
    if (width, height) != rgb.size:
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return center_crop(np.asarray(rgb), size)


def _problem(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _decode(path: Path, size: int, choose) -> tuple[dict[int, np.ndarray], int, int]:
    """One pass over the first video stream.

    ``choose(declared)`` gets the frame count the container declares (0 when unknown) and
    returns the indices to keep, or ``None`` to keep every frame. Only kept frames are
    converted to RGB at the target size. Returns ``({index: frame}, frames decoded, frames
    declared)``.
    """
    import av  # imported on the first video read: images need only Pillow

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise LoadError(path, f"cannot open video: {_problem(exc)}") from exc
    kept: dict[int, np.ndarray] = {}
    count = 0
    with container:
        if not container.streams.video:
            raise LoadError(path, "has no video stream")
        stream = container.streams.video[0]
        declared = max(stream.frames, 0)
        chosen = choose(declared)
        wanted = None if chosen is None else set(chosen)
        try:
            for frame in container.decode(stream):
                if wanted is None or count in wanted:
                    width, height = resized_shape(frame.width, frame.height, size)
                    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
                    kept[count] = center_crop(rgb.to_ndarray(), size)
                count += 1
        except av.FFmpegError as exc:
            raise LoadError(path, f"cannot decode video frame {count}: {_problem(exc)}") from exc
    return kept, count, declared


def read_video(
    value: str | os.PathLike, size: int, num_frames: int, sampling: str = "uniform", jitter: bool = False
) -> np.ndarray:
    """Decode ``num_frames`` frames of a video -> ``[num_frames, size, size, 3]`` uint8 RGB.

    Frames are chosen by :func:`gramx_video.frames.sample_indices` over the frames in the
    file. When the container declares its frame count, one pass converts only the chosen
    frames; when it does not (WebM, for one) or the count was wrong, the choice is made from
    the frames actually decoded. Raises :class:`gramx.LoadError` naming the file when it is
    missing, truncated (MP4/MOV and Matroska/WebM headers declare their size), cannot be
    opened or decoded, has no video stream, or holds no frames.
    """
    path = _existing(value)
    expected, actual = declared_size(path), path.stat().st_size
    if expected is not None and expected > actual:
        problem = f"video file is truncated: its container declares at least {expected} bytes, the file has {actual}"
        raise LoadError(path, problem)

    def pick(total: int) -> list[int]:
        return sample_indices(total, num_frames, sampling, jitter)

    first: list[int] = []

    def choose(declared: int) -> list[int] | None:
        first.extend(pick(declared) if declared else [])
        return first or None

    kept, total, declared = _decode(path, size, choose)
    if total == 0:
        raise LoadError(path, "contains no video frames")
    indices = first if total == declared else pick(total)
    if not all(i in kept for i in indices):  # the declared count was wrong: decode again
        kept, _, _ = _decode(path, size, lambda declared: indices)
        if not all(i in kept for i in indices):
            raise LoadError(path, "video frames changed between two decoding passes")
    return np.stack([kept[i] for i in indices])
