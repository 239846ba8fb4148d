"""Tests of the ``image`` modality of gramx-video: decoding, geometry, encoders, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gramx
from gramx.cli.app import main as gramx_main
from gramx.testing import ModalityConformance, check_modality, fresh_host, run_in_host
from gramx_video import IMAGE, IMAGE_SAMPLES, FrameCNN, ImageConfig, ImageEncoder, load_image
from gramx_video.io import read_image

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(str(p) for p in DATA.glob("*.jpg"))  # hand signs 0-9, 100x100 (see data/ATTRIBUTION.md)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("image")
    out = {}
    photo = Image.open(PHOTOS[0])
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(d / "alpha.png")
    photo.convert("L").save(d / "grey.png")
    Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)).save(d / "grey16.png")
    photo.convert("P").save(d / "palette.gif")
    stripes = np.zeros((100, 200, 3), np.uint8)  # red | green | blue, 50 / 100 / 50 px wide
    stripes[:, :50, 0] = stripes[:, 50:150, 1] = stripes[:, 150:, 2] = 255
    Image.fromarray(stripes).save(d / "stripes.png")
    out.update({n: d / n for n in ("alpha.png", "grey.png", "grey16.png", "palette.gif", "stripes.png")})
    jpeg = Path(PHOTOS[1]).read_bytes()
    for name, data in {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "cut_end.jpg": jpeg[:-10],
        "garbage.jpg": np.random.default_rng(0).bytes(3000),
        "text.png": b"not an image\n" * 20,
        "empty.jpg": b"",
        "header_only.png": (d / "stripes.png").read_bytes()[:60],
    }.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    return {name: str(path) for name, path in out.items()}


GOOD = ["alpha.png", "grey.png", "grey16.png", "palette.gif", "stripes.png"]
BAD = ["truncated.jpg", "cut_end.jpg", "garbage.jpg", "text.png", "empty.jpg", "header_only.png"]


class TestImageConformance(ModalityConformance):
    """The conformance kit on demo JPEGs and PNG/GIF files written by the test."""

    modality = IMAGE

    @pytest.fixture(autouse=True)
    def _inputs(self, images):
        self.samples = [*PHOTOS[:4], *(images[name] for name in GOOD)]
        self.bad_inputs = [images[name] for name in BAD]


def test_bad_input_messages(images, tmp_path):
    cfg = ImageConfig()
    cases = {
        str(tmp_path / "missing.jpg"): "file not found",
        str(tmp_path): "not a file",
        images["truncated.jpg"]: "truncated",
        images["text.png"]: "not an image",
    }
    for value, problem in cases.items():
        with pytest.raises(gramx.LoadError, match=problem):
            load_image(value, cfg)
    with pytest.raises(gramx.LoadError, match="expected a file path, got dict"):
        load_image({"path": "a.jpg"}, cfg)


def test_every_mode_becomes_rgb(images):
    for path in (*PHOTOS, *(images[name] for name in GOOD)):
        x = load_image(path, ImageConfig())
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
    alpha = read_image(images["alpha.png"], 32)  # transparent pixels are composited on white
    assert alpha[:2].min() > 240 and alpha[-2:].mean() < 200
    grey16 = read_image(images["grey16.png"], 30)
    assert grey16.max() > 200 and (grey16[..., 0] == grey16[..., 1]).all()


def test_resize_keeps_aspect_and_crops_the_centre(images):
    out = read_image(images["stripes.png"], 50)  # 200x100 -> 100x50 -> centre 50x50: all green
    assert out.shape == (50, 50, 3)
    assert out[:, :, 1].min() > 200 and out[:, :, [0, 2]].max() < 60
    photo = read_image(PHOTOS[0], 100)  # already the right size: untouched
    assert np.array_equal(photo, np.asarray(Image.open(PHOTOS[0]).convert("RGB")))


def test_normalisation():
    cfg = ImageConfig(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], size=100)
    x = load_image(PHOTOS[0], cfg)
    raw = torch.from_numpy(read_image(PHOTOS[0], 100).copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(x, raw * 2 - 1, atol=1e-6)


def test_image_encoder_augments_only_in_training():
    enc = ImageEncoder(FrameCNN(dropout=0.0), augment=True)
    assert enc.feature_dim == 256
    x = torch.stack([load_image(p, ImageConfig()) for p in PHOTOS[:4]])
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc(x), enc(x))
        enc.jitter.train()
        assert not torch.allclose(enc.jitter(x), x)
    for size in (32, 64, 100):
        assert FrameCNN().eval()(torch.randn(2, 3, size, size)).shape == (2, 256)


def test_hf_image_encoder(tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37)  # fmt: skip
    ViTModel(config).save_pretrained(tmp_path)
    cfg = ImageConfig(encoder="hf", model_path=str(tmp_path), size=32, mean=[0.5] * 3, std=[0.5] * 3)
    assert check_modality(IMAGE, PHOTOS[:2], cfg=cfg)
    frozen = IMAGE.build_encoder(cfg.model_copy(update={"freeze": True}))
    assert frozen.feature_dim == 32 and not any(p.requires_grad for p in frozen.parameters())


def test_config_is_strict():
    with pytest.raises(ValueError, match="extra"):
        ImageConfig(num_frames=8)  # a video option
    with pytest.raises(ValueError):
        ImageConfig(mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="positive"):
        ImageConfig(std=[0.2, 0.0, 0.2])


def test_runs_through_the_host(tmp_path):
    """Discovered through its entry point, trained two steps, saved and loaded (gramx.testing.run_in_host)."""
    run = run_in_host("image", tmp_path, distribution="gramx-video")
    assert run.status.name == "video" and run.embeddings.shape == (4, 8)


def test_cli_check(capsys):
    with fresh_host():
        assert len(IMAGE_SAMPLES) == 2
        assert gramx_main(["plugins", "check", "image"]) == 0
        assert "image: conforms" in capsys.readouterr().out
