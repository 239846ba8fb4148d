"""Tests of the depth plugin on real files written with Pillow and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import gramx
from gramx.cli import main
from gramx.testing import ModalityConformance, check_modality, fresh_host, run_in_host
from gramx_depth import DEPTH, DepthConfig, DepthEncoder, depth_to_tensor, load_depth

H, W = 40, 56


def ramp_m() -> np.ndarray:
    """A smooth [H, W] depth map in metres (0.5 .. 2.0 m) with a hole and a far pixel."""
    y, x = np.mgrid[0:H, 0:W]
    depth = 0.5 + 1.5 * (x + y) / (W + H)
    depth[5:9, 5:9] = 0.0
    return depth


def write_png_mm(path, depth_m) -> str:
    Image.fromarray(np.round(np.nan_to_num(depth_m) * 1000).astype(np.uint16)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("depth")
    good = {
        "png": write_png_mm(d / "ramp.png", ramp_m()),
        "npy_float": str(d / "ramp_m.npy"),
        "npy_uint16": str(d / "ramp_mm.npy"),
        "npy_chw": str(d / "ramp_1hw.npy"),
    }
    np.save(good["npy_float"], ramp_m().astype(np.float32))
    np.save(good["npy_uint16"], np.round(ramp_m() * 1000).astype(np.uint16))
    np.save(good["npy_chw"], ramp_m()[None].astype(np.float32))
    bad = {
        "corrupt_png": d / "corrupt.png",
        "text_png": d / "text.png",
        "truncated_png": d / "truncated.png",
        "rgb_png": d / "rgb.png",
        "gray8_png": d / "gray8.png",
        "cube_npy": d / "cube.npy",
        "zeros_png": d / "zeros.png",
        "nan_npy": d / "nan.npy",
        "invalid_npy": d / "invalid.npy",
        "bool_npy": d / "mask.npy",
        "corrupt_npy": d / "corrupt.npy",
        "jpg": d / "depth.jpg",
        "strip_png": d / "strip.png",
    }
    bad["corrupt_png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    bad["text_png"].write_text("this is not an image")
    bad["truncated_png"].write_bytes((d / "ramp.png").read_bytes()[:200])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad["rgb_png"])
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(bad["gray8_png"])
    np.save(bad["cube_npy"], np.ones((8, 8, 3), np.float32))
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(bad["zeros_png"])
    np.save(bad["nan_npy"], np.full((8, 8), np.nan, np.float32))
    invalid = np.array([[0.0, np.nan], [np.inf, 50.0]], np.float32)  # zero, NaN, inf, beyond max_depth
    np.save(bad["invalid_npy"], invalid)
    np.save(bad["bool_npy"], np.ones((8, 8), bool))
    bad["corrupt_npy"].write_bytes(b"\x93NUMPY garbage")
    bad["jpg"].write_bytes(b"not really")
    Image.fromarray(np.full((1, 500), 1500, np.uint16)).save(bad["strip_png"])  # a 16-bit PNG, but no depth map
    return good, {k: str(v) for k, v in bad.items()}


def test_conformance_on_written_files(files):
    good, bad = files
    assert check_modality(DEPTH, list(good.values()), bad_inputs=list(bad.values()))


class TestShippedSamples(ModalityConformance):
    modality = DEPTH
    samples = list(DEPTH.samples)
    bad_inputs = ["missing-depth.png"]


@pytest.mark.parametrize(
    "key, problem",
    [
        ("corrupt_png", "corrupt PNG"),
        ("text_png", "not a readable image"),
        ("truncated_png", "corrupt PNG"),
        ("rgb_png", "mode 'RGB'"),
        ("gray8_png", "8-bit grayscale"),
        ("cube_npy", "got shape (8, 8, 3)"),
        ("zeros_png", "no valid depth pixels among 64: 64 <= min_depth"),
        ("nan_npy", "all 64 pixels are NaN"),
        ("invalid_npy", "1 NaN, 1 infinite, 1 beyond max_depth"),
        ("bool_npy", "unsupported dtype bool"),
        ("corrupt_npy", "not a readable .npy"),
        ("jpg", "unsupported depth file type '.jpg'"),
        ("strip_png", "a 1x500 map (aspect ratio 500) is not a plausible depth map"),
    ],
)
def test_bad_inputs_name_file_and_problem(files, key, problem):
    path = files[1][key]
    with pytest.raises(gramx.LoadError) as info:
        load_depth(path, DepthConfig())
    assert info.value.source == path and str(info.value).startswith(path)
    assert problem in str(info.value)


def test_missing_file():
    with pytest.raises(gramx.LoadError, match="nowhere.png: file not found"):
        load_depth("nowhere.png", DepthConfig())


def test_sample_layout_and_masking(files):
    cfg = DepthConfig(size=H)  # keep rows 1:1 (the width is stretched)
    x = load_depth(files[0]["npy_float"], cfg)
    assert x.shape == (2, H, H) and x.dtype == torch.float32
    depth, mask = x
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[5:9, 4:6].eq(0).all() and depth[mask == 0].eq(0).all()
    assert 0 < depth[mask == 1].min() and depth.max() <= 1
    farthest = torch.tensor(ramp_m().max() / cfg.max_depth, dtype=torch.float32)
    assert torch.allclose(depth[mask == 1].max(), farthest, atol=1e-3)


def test_invalid_pixels_are_masked():
    depth = np.full((16, 16), 2.0)
    depth[0, 0], depth[0, 1], depth[0, 2], depth[0, 3], depth[0, 4] = 0, np.nan, np.inf, -1, 11.0
    x = depth_to_tensor(depth, DepthConfig(size=16))
    assert x[1, 0, :5].eq(0).all() and x[0, 0, :5].eq(0).all()
    assert x[1].sum() == 16 * 16 - 5 and torch.allclose(x[0, 1:], torch.tensor(0.2))


def test_png_in_mm_and_npy_in_metres_agree(files):
    good, _ = files
    png, f32, u16, chw = (load_depth(good[k], DepthConfig()) for k in ("png", "npy_float", "npy_uint16", "npy_chw"))
    assert torch.equal(png[1], f32[1])
    assert torch.allclose(png, f32, atol=1e-3 / 10.0 + 1e-6)  # 1 mm rounding / max_depth
    assert torch.equal(png, u16) and torch.equal(f32, chw)


def test_scales_and_per_image_normalisation(files):
    good, _ = files
    metres = load_depth(good["npy_float"], DepthConfig())
    as_cm = load_depth(good["npy_float"], DepthConfig(float_scale=100.0, max_depth=1000.0))
    assert torch.allclose(metres, as_cm, atol=1e-6)
    x = load_depth(good["png"], DepthConfig(normalize="per_image"))
    valid = x[0][x[1] == 1]
    assert valid.min() == 0 and valid.max() == 1
    clipped = load_depth(good["png"], DepthConfig(max_depth=1.0, size=H))
    assert 0 < clipped[1].mean() < metres[1].mean()  # far pixels became invalid


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_depth"):
        DepthConfig(min_depth=2.0, max_depth=1.0)
    with pytest.raises(ValueError):
        DepthConfig(sizee=32)  # unknown keys are errors


def test_encoder_shapes_and_feature_dim():
    enc = DepthEncoder(feature_dim=48, width=8).eval()
    for size in (16, 64, 96):
        assert enc(torch.rand(3, 2, size, size)).shape == (3, 48)
    assert enc.feature_dim == 48


def test_runs_through_the_host_and_the_cli_check(tmp_path):
    run = run_in_host("depth", tmp_path, distribution="gramx-depth")
    assert run.status.modalities == ["depth"] and run.embeddings.shape == (4, 8)
    with fresh_host() as host:
        assert host.get_modality("depth") is DEPTH
        assert main(["plugins", "check", "depth"]) == 0
