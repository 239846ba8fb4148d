"""gramx plugin: the ``video`` modality (PyAV decoding, frame sampling, per-frame encoder +
temporal pooling) and the ``image`` modality (Pillow), which share the frame encoder.

Installed, it registers through the ``gramx`` entry point ``video = "gramx_video"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import gramx
from gramx_video.config import FrameConfig, ImageConfig, VideoConfig
from gramx_video.encoders import (
    AttentionPool,
    FrameCNN,
    HFFrameEncoder,
    ImageEncoder,
    Jitter,
    VideoEncoder,
    build_frame_encoder,
    build_image_encoder,
    build_video_encoder,
)
from gramx_video.frames import sample_indices, to_tensor
from gramx_video.io import open_image, read_image, read_video

__all__ = ["FrameConfig", "ImageConfig", "VideoConfig", "FrameCNN", "HFFrameEncoder", "Jitter", "AttentionPool",
           "ImageEncoder", "VideoEncoder", "build_frame_encoder", "IMAGE", "VIDEO", "load_image", "load_video",
           "sample_indices", "IMAGE_SAMPLES", "VIDEO_SAMPLES"]  # fmt: skip

_SAMPLES = Path(__file__).parent / "samples"
IMAGE_SAMPLES = tuple(str(p) for p in sorted(_SAMPLES.glob("*.jpg")))
VIDEO_SAMPLES = tuple(str(p) for p in sorted(_SAMPLES.glob("*.mp4")))


def _processed(images, cfg: FrameConfig) -> torch.Tensor:
    """Pixel values ``[N, 3, H, W]`` made by the image processor saved with ``cfg.model_path``."""
    from gramx_hf.towers import preprocessor

    return preprocessor(cfg.model_path, "image")(images=images, return_tensors="pt")["pixel_values"]


def load_image(value: str | os.PathLike, cfg: ImageConfig) -> torch.Tensor:
    """One image file -> ``[3, size, size]`` float32, normalised with ``cfg.mean`` / ``cfg.std``.

    With ``preprocess: processor`` the image processor saved with ``cfg.model_path`` makes
    the pixel values instead (as the checkpoint expects them).
    """
    if cfg.preprocess == "processor":
        return _processed(open_image(value), cfg)[0]
    return to_tensor(read_image(value, cfg.size), cfg.mean, cfg.std)


def load_video(value: str | os.PathLike, cfg: VideoConfig) -> torch.Tensor:
    """One video file -> ``[num_frames, 3, size, size]`` float32, normalised like images.

    With ``preprocess: processor`` the frames, decoded at ``size``, go through the image
    processor saved with ``cfg.model_path`` (e.g. CLIP's, for a CLIP frame encoder).
    """
    frames = read_video(value, cfg.size, cfg.num_frames, cfg.sampling, cfg.jitter)
    if cfg.preprocess == "processor":
        return _processed(list(frames), cfg)
    return to_tensor(frames, cfg.mean, cfg.std)


IMAGE = gramx.Modality(
    name="image",
    load=load_image,
    build_encoder=build_image_encoder,
    config=ImageConfig,
    description="images (PNG/JPEG/... via Pillow) -> [3, H, W]; CNN or transformers encoder",
    samples=IMAGE_SAMPLES,
)

VIDEO = gramx.Modality(
    name="video",
    load=load_video,
    build_encoder=build_video_encoder,
    config=VideoConfig,
    description="video files (MP4/WebM/... via PyAV) -> [T, 3, H, W]; frame encoder + temporal pooling",
    samples=VIDEO_SAMPLES,
)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(VIDEO)
    register(IMAGE)
