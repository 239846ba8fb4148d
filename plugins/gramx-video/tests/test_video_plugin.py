"""Tests of the ``video`` modality of gramx-video: decoding, frame sampling, encoders, bad inputs."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import gramx
from gramx.cli.app import main as gramx_main
from gramx.testing import ModalityConformance, check_modality, fresh_host, run_in_host
from gramx_video import VIDEO, VIDEO_SAMPLES, Jitter, VideoConfig, VideoEncoder, load_video, sample_indices
from gramx_video.containers import declared_size
from gramx_video.io import read_video

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(DATA.glob("*.jpg"))  # hand signs 0-9, 100x100 (see data/ATTRIBUTION.md)


def write_clip(path: Path, frames: list[np.ndarray], codec: str, rate: int = 8) -> Path:
    """Encode RGB ``[H, W, 3]`` uint8 frames with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def photo_frames(count: int, width: int = 96, height: int = 64) -> list[np.ndarray]:
    """``count`` demo photos, squeezed to ``width x height`` (a non-square clip)."""
    return [np.asarray(Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB").resize((width, height))) for i in range(count)]


def index_frames(count: int) -> list[np.ndarray]:
    """Flat grey frames whose level encodes the frame index (i * 20)."""
    return [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(count)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("video")
    out = {
        "h264.mp4": write_clip(d / "h264.mp4", photo_frames(12), "libx264"),
        "mpeg4.mp4": write_clip(d / "mpeg4.mp4", photo_frames(10), "mpeg4"),
        "vp9.webm": write_clip(d / "vp9.webm", photo_frames(16), "libvpx-vp9"),
        "vp8.webm": write_clip(d / "vp8.webm", photo_frames(9), "libvpx"),
        "index.mp4": write_clip(d / "index.mp4", index_frames(12), "libx264"),
        "index.webm": write_clip(d / "index.webm", index_frames(12), "libvpx-vp9"),
    }
    mp4, webm = out["h264.mp4"].read_bytes(), out["vp9.webm"].read_bytes()
    for name, data in {
        "garbage.mp4": np.random.default_rng(0).bytes(5000),
        "text.webm": b"not a video\n" * 100,
        "empty.mp4": b"",
        "truncated.mp4": mp4[: len(mp4) // 2],
        "nearly_complete.mp4": mp4[:-30],
        "truncated.webm": webm[: int(len(webm) * 0.8)],
    }.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    for name, codec in (("zero_frames.avi", "mpeg4"), ("no_video_stream.mp4", "mpeg4")):
        with av.open(str(d / name), "w") as container:  # a header, no frames
            stream = container.add_stream(codec, rate=8)
            stream.width = stream.height = 32
            container.start_encoding()
        out[name] = d / name
    return {name: str(path) for name, path in out.items()}


GOOD = ["h264.mp4", "mpeg4.mp4", "vp9.webm", "vp8.webm"]
BAD = ["garbage.mp4", "text.webm", "empty.mp4", "truncated.mp4", "nearly_complete.mp4", "truncated.webm",
       "zero_frames.avi", "no_video_stream.mp4"]  # fmt: skip


class TestVideoConformance(ModalityConformance):
    """The conformance kit on MP4 (H.264, MPEG-4) and WebM (VP9, VP8) clips of the demo photos."""

    modality = VIDEO

    @pytest.fixture(autouse=True)
    def _inputs(self, clips):
        self.samples = [clips[name] for name in GOOD]
        self.bad_inputs = [clips[name] for name in BAD]


def test_attention_pooling_conforms(clips):
    cfg = VideoConfig(temporal_pool="attention", num_frames=4, sampling="segment")
    assert check_modality(VIDEO, [clips["h264.mp4"], clips["vp9.webm"]], cfg=cfg)


def test_bad_input_messages(clips, tmp_path):
    cfg = VideoConfig()
    cases = {
        str(tmp_path / "missing.mp4"): "file not found",
        str(tmp_path): "not a file",
        clips["garbage.mp4"]: "cannot open video",
        clips["truncated.webm"]: "truncated",
        clips["nearly_complete.mp4"]: "truncated",
        clips["zero_frames.avi"]: "no video frames",
        clips["no_video_stream.mp4"]: "no video stream",
    }
    for value, problem in cases.items():
        with pytest.raises(gramx.LoadError, match=problem):
            load_video(value, cfg)


def test_declared_size(clips):
    for name in ("h264.mp4", "mpeg4.mp4", "vp9.webm", "vp8.webm"):
        assert declared_size(Path(clips[name])) == Path(clips[name]).stat().st_size
    assert declared_size(Path(clips["garbage.mp4"])) is None
    assert declared_size(Path(clips["zero_frames.avi"])) is None  # AVI: left to FFmpeg


def test_shapes_and_normalisation(clips):
    cfg = VideoConfig(num_frames=5, size=48)
    for name in GOOD:
        x = load_video(clips[name], cfg)
        assert x.shape == (5, 3, 48, 48) and x.dtype == torch.float32
    raw = read_video(clips["h264.mp4"], 48, 5)
    assert raw.shape == (5, 48, 48, 3) and raw.dtype == np.uint8
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    back = load_video(clips["h264.mp4"], cfg) * std + mean
    assert torch.allclose(back, torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255, atol=1e-5)


def test_sample_indices():
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(12, 1) == [5]
    assert sample_indices(3, 5) == [0, 0, 1, 2, 2]  # short clips repeat frames
    assert sample_indices(1, 3, "segment") == [0, 0, 0]
    assert sample_indices(12, 4, "segment") == [1, 4, 7, 10]  # middle of 0-2, 3-5, 6-8, 9-11
    assert sample_indices(10, 4, "segment") == [1, 3, 6, 8]
    assert sample_indices(2, 4, "segment") == [0, 0, 1, 1]
    for total in (3, 10, 12, 100):
        bounds = [i * total / 4 for i in range(5)]
        for _ in range(20):
            picked = sample_indices(total, 4, "segment", jitter=True)
            assert all(lo - 1 < i < hi for i, lo, hi in zip(picked, bounds, bounds[1:]))
    assert len({tuple(sample_indices(100, 4, "segment", jitter=True)) for _ in range(10)}) > 1
    with pytest.raises(ValueError):
        sample_indices(0, 4)


@pytest.mark.parametrize("name", ["index.mp4", "index.webm"])  # MP4 declares its frame count, WebM does not
def test_decoded_frames_are_the_sampled_ones(clips, name):
    for sampling, expected in (("uniform", [0, 4, 7, 11]), ("segment", [1, 4, 7, 10])):
        frames = read_video(clips[name], 16, 4, sampling)
        levels = frames.reshape(4, -1).mean(axis=1)
        np.testing.assert_allclose(levels, [20 * i for i in expected], atol=4)


def test_video_encoder_pools_frames():
    enc = VideoEncoder(VIDEO.build_encoder(VideoConfig()).frames, pool="mean").eval()
    assert enc.feature_dim == 256
    clip = torch.randn(2, 5, 3, 64, 64)
    with torch.no_grad():
        per_frame = enc.frames(clip.flatten(0, 1)).view(2, 5, -1)
        assert torch.allclose(enc(clip), per_frame.mean(dim=1), atol=1e-5)


def test_jitter_is_shared_by_the_frames_of_a_clip():
    jitter = Jitter().train()
    frame = torch.randn(1, 3, 32, 32)
    out = jitter(frame.expand(6, -1, -1, -1).contiguous(), group=3)  # two clips of three equal frames
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[2])
    assert not torch.allclose(out[0], out[3])
    assert torch.equal(jitter.eval()(frame), frame)


def _tiny_vision_models(root: Path) -> dict[str, str]:
    from transformers import CLIPConfig, CLIPModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    models = {
        "vit": ViTModel(ViTConfig(image_size=32, patch_size=8, **small)),
        "clip": CLIPModel(CLIPConfig(text_config=dict(vocab_size=99, **small),
                                     vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)),
        "resnet": ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
    }  # fmt: skip
    for name, model in models.items():
        model.save_pretrained(root / name)
    return {name: str(root / name) for name in models}


@pytest.fixture(scope="module")
def tiny_vision(tmp_path_factory) -> dict[str, str]:
    torch.manual_seed(0)
    return _tiny_vision_models(tmp_path_factory.mktemp("hf"))


@pytest.mark.parametrize("name, dim", [("vit", 32), ("clip", 32), ("resnet", 16)])
def test_hf_frame_encoder(tiny_vision, clips, name, dim):
    cfg = VideoConfig(encoder="hf", model_path=tiny_vision[name], size=32, num_frames=3, augment=False)
    assert check_modality(VIDEO, [clips["h264.mp4"], clips["vp8.webm"]], cfg=cfg)
    assert VIDEO.build_encoder(cfg).feature_dim == dim


def test_config_is_strict():
    with pytest.raises(ValueError, match="extra"):
        VideoConfig(num_frame=8)
    with pytest.raises(ValueError, match="model_path"):
        VideoConfig(encoder="hf")
    with pytest.raises(ValueError):
        VideoConfig(sampling="dense")
    assert VideoConfig.model_validate({"num_frames": 16, "sampling": "segment", "jitter": True}).num_frames == 16


def test_runs_through_the_host(tmp_path):
    """Discovered through its entry point, trained two steps, saved and loaded (gramx.testing.run_in_host)."""
    run = run_in_host("video", tmp_path, distribution="gramx-video")
    assert sorted(run.status.modalities) == ["image", "video"] and run.embeddings.shape == (4, 8)


def test_cli_check(capsys):
    with fresh_host():
        assert len(VIDEO_SAMPLES) == 1 and Path(VIDEO_SAMPLES[0]).stat().st_size < 10_000
        assert gramx_main(["plugins", "check", "video"]) == 0
        assert "video: conforms" in capsys.readouterr().out
