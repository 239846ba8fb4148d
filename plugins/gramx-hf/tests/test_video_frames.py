"""A CLIP or SigLIP vision tower as the video frame encoder, each frame prepared by the checkpoint's image processor."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoImageProcessor

from gramx_hf.towers import load_pretrained
from gramx_video import VIDEO, VIDEO_SAMPLES, VideoConfig, load_video
from gramx_video.encoders import build_video_encoder
from gramx_video.io import read_video


@pytest.mark.parametrize("architecture", ["CLIPModel", "SiglipModel"])
def test_video_frames_through_the_image_processor_embed_as_the_image_tower(architecture, checkpoints):
    folder = checkpoints[architecture]
    cfg = VideoConfig(encoder="hf", model_path=folder, output="projected", preprocess="processor", num_frames=3,
                      freeze=True)
    clip = load_video(VIDEO_SAMPLES[0], cfg)
    frames = read_video(VIDEO_SAMPLES[0], cfg.size, cfg.num_frames)
    expected = AutoImageProcessor.from_pretrained(folder)(images=list(frames), return_tensors="pt")["pixel_values"]
    assert clip.shape == (3, 3, 32, 32)
    assert torch.equal(clip, expected)  # the checkpoint's resizing and mean/std, not the plugin's

    encoder = build_video_encoder(cfg).eval()
    with torch.no_grad():
        ours = encoder(VIDEO.make_batch([clip], cfg))
        out = load_pretrained(folder).eval().get_image_features(pixel_values=expected)
    per_frame = out if isinstance(out, torch.Tensor) else out.pooler_output
    torch.testing.assert_close(ours[0], per_frame.mean(dim=0), atol=1e-5, rtol=0)  # frames averaged (CLIP4Clip)
