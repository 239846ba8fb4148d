"""Tests of the pointcloud plugin on real files written with open3d's writers."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch

import gramx
from gramx.cli import main
from gramx.testing import ModalityConformance, check_modality, fresh_host, run_in_host
from gramx_pointcloud import (
    POINTCLOUD,
    PointCloudConfig,
    PointNetEncoder,
    farthest_point_sample,
    load_pointcloud,
    prepare_points,
    read_points,
)
from gramx_pointcloud.io import sample_surface

SMALL = PointCloudConfig(num_points=256, mesh_samples=1024)


def cloud(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Points on an anisotropic blob, not centred, not unit-sized."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [1.0, 0.5, 0.2] + [3.0, -2.0, 1.0]


def to_o3d(points: np.ndarray) -> o3d.geometry.PointCloud:
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))


def torus(scale: float = 1.0, shift=(0.0, 0.0, 0.0)) -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh.create_torus(torus_radius=1.0, tube_radius=0.3, radial_resolution=20, tubular_resolution=10)
    mesh.scale(scale, center=(0.0, 0.0, 0.0))
    return mesh.translate(shift)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("pc_good")
    files = {}
    for ext in ("ply", "pcd", "xyz"):
        files[f"cloud_{ext}"] = str(d / f"cloud.{ext}")
        assert o3d.io.write_point_cloud(files[f"cloud_{ext}"], to_o3d(cloud()))
    for ext in ("obj", "off", "ply"):
        files[f"mesh_{ext}"] = str(d / f"mesh.{ext}")
        assert o3d.io.write_triangle_mesh(files[f"mesh_{ext}"], torus())
    files["few_xyzrgb"] = str(d / "few.xyzrgb")
    few = to_o3d(cloud(100))
    few.colors = o3d.utility.Vector3dVector(np.full((100, 3), 0.5))
    assert o3d.io.write_point_cloud(files["few_xyzrgb"], few)
    return files


@pytest.fixture(scope="module")
def bad(tmp_path_factory, good):
    d = tmp_path_factory.mktemp("pc_bad")
    nan_points = cloud(50)
    nan_points[7] = [np.nan, 0, 0]
    inf_points = cloud(50)
    inf_points[3] = [0, np.inf, 0]
    o3d.io.write_point_cloud(str(d / "nan.ply"), to_o3d(nan_points))
    o3d.io.write_point_cloud(str(d / "inf.pcd"), to_o3d(inf_points))
    (d / "nan.xyz").write_text("0 0 0\n1 1 1\nnan 2 2\n")
    (d / "zero_bytes.ply").write_bytes(b"")
    (d / "no_points.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    )
    (d / "comments.xyz").write_text("# exported from nowhere\n\n")
    (d / "text.ply").write_text("this is not a ply file\n")
    for name in ("cloud_ply", "mesh_ply", "mesh_off", "cloud_pcd"):
        data = open(good[name], "rb").read()
        ext = name.split("_")[1]
        (d / f"truncated_{name.split('_')[0]}.{ext}").write_bytes(data[: len(data) // 2])
    (d / "garbage.pcd").write_bytes(b"\x00\x01\x02 not a pcd")
    (d / "words.xyz").write_text("a b c\nd e f\n")
    (d / "garbage.obj").write_bytes(b"\x00\xffnot an obj\n")
    (d / "vertices_only.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (d / "model.stl").write_text("solid x\nendsolid x\n")
    (d / "folder.ply").mkdir()
    return d


BAD_CASES = [
    ("nan.ply", "1 of 50 points have NaN/inf coordinates"),
    ("inf.pcd", "1 of 50 points have NaN/inf coordinates"),
    ("nan.xyz", "1 of 3 points have NaN/inf coordinates"),
    ("zero_bytes.ply", "file is empty (0 bytes)"),
    ("no_points.ply", "point cloud is empty"),
    ("comments.xyz", "point cloud is empty"),
    ("text.ply", "corrupt PLY file: not a PLY file"),
    ("truncated_cloud.ply", "corrupt PLY file: truncated"),
    ("truncated_mesh.ply", "corrupt PLY file: truncated"),
    ("truncated_mesh.off", "corrupt OFF file: truncated"),
    ("truncated_cloud.pcd", "unreadable or corrupt PCD file"),
    ("garbage.pcd", "corrupt PCD file: not a PCD file"),
    ("words.xyz", "unreadable or corrupt XYZ file"),
    ("garbage.obj", "unreadable or corrupt OBJ file"),
    ("vertices_only.obj", "unreadable or corrupt OBJ file"),
    ("model.stl", "unsupported point-cloud file type '.stl'"),
    ("folder.ply", "not a file"),
    ("missing.ply", "file not found"),
]


def test_conformance_on_written_files(good, bad):
    samples = [good[k] for k in ("cloud_ply", "cloud_pcd", "cloud_xyz", "mesh_obj", "mesh_off", "mesh_ply", "few_xyzrgb")]
    bad_inputs = [str(bad / name) for name, _ in BAD_CASES]
    assert check_modality(POINTCLOUD, samples, bad_inputs=bad_inputs, cfg=SMALL)


class TestShippedSamples(ModalityConformance):
    modality = POINTCLOUD
    samples = list(POINTCLOUD.samples)


@pytest.mark.parametrize("name, problem", BAD_CASES)
def test_bad_inputs_name_file_and_problem(bad, name, problem):
    path = str(bad / name)
    with pytest.raises(gramx.LoadError) as info:
        load_pointcloud(path, SMALL)
    assert info.value.source == path and str(info.value).startswith(path)
    assert problem in str(info.value)


def test_drop_nonfinite_keeps_the_rest(bad):
    x = load_pointcloud(str(bad / "nan.ply"), PointCloudConfig(num_points=64, drop_nonfinite=True))
    assert x.shape == (64, 3) and torch.isfinite(x).all()


def test_output_is_centred_unit_sphere_and_exact_size(good):
    for key, path in good.items():
        x = load_pointcloud(path, SMALL)
        assert x.shape == (256, 3) and x.dtype == torch.float32, key
        assert x.mean(0).abs().max() < 1e-5, key
        assert abs(x.norm(dim=1).max().item() - 1) < 1e-5, key


def test_clouds_and_meshes_are_told_apart(good):
    cloud_ply = read_points(good["cloud_ply"], SMALL)
    assert np.allclose(cloud_ply, cloud())  # a PLY without faces: its points as they are
    for key in ("mesh_obj", "mesh_off", "mesh_ply"):
        surface = read_points(good[key], SMALL)
        assert surface.shape == (SMALL.mesh_samples, 3), key  # sampled over the surface
        # every sample lies on the torus' tube (0.3 from the ring, up to facetting)
        ring = np.sqrt(surface[:, 0] ** 2 + surface[:, 1] ** 2) - 1.0
        tube = np.hypot(ring, surface[:, 2])
        assert ((tube > 0.25) & (tube < 0.31)).all(), key
    assert np.array_equal(read_points(good["mesh_obj"], SMALL), read_points(good["mesh_obj"], SMALL))
    assert not np.array_equal(read_points(good["mesh_obj"], SMALL), read_points(good["mesh_obj"], PointCloudConfig(seed=1)))


@pytest.mark.parametrize("sampling", ["fps", "voxel"])
def test_translation_and_scale_invariance(sampling):
    cfg = PointCloudConfig(num_points=512, sampling=sampling, voxel_size=0.05)
    points = cloud()
    a = prepare_points(points, cfg)
    b = prepare_points(points * 3.7 + [10.0, -4.0, 2.5], cfg)
    assert a.shape == (512, 3) and np.allclose(a, b, atol=1e-5)


def test_invariance_through_files(tmp_path):
    o3d.io.write_point_cloud(str(tmp_path / "a.ply"), to_o3d(cloud()))
    o3d.io.write_point_cloud(str(tmp_path / "b.ply"), to_o3d(cloud() * 0.01 - 5.0))
    o3d.io.write_triangle_mesh(str(tmp_path / "a.off"), torus())
    o3d.io.write_triangle_mesh(str(tmp_path / "b.off"), torus(scale=25.0, shift=(1.0, 2.0, 3.0)))
    for a, b in (("a.ply", "b.ply"), ("a.off", "b.off")):
        x, y = (load_pointcloud(str(tmp_path / f), SMALL) for f in (a, b))
        assert torch.allclose(x, y, atol=1e-4), (a, b)


def test_farthest_point_sampling():
    points = cloud(2000)
    for k in (1, 17, 500, 2000):
        picked = farthest_point_sample(points, k)
        assert picked.shape == (k, 3)
        assert np.array_equal(picked, farthest_point_sample(points, k))  # deterministic
    picked = farthest_point_sample(points, 100)
    as_rows = {tuple(p) for p in points}
    assert all(tuple(p) in as_rows for p in picked) and len({tuple(p) for p in picked}) == 100
    assert np.array_equal(picked[0], points[0])

    def min_gap(p):
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        return d[~np.eye(len(p), dtype=bool)].min()

    random = points[np.random.default_rng(0).choice(len(points), 100, replace=False)]
    assert min_gap(picked) > 2 * min_gap(random)  # FPS spreads the points out
    with pytest.raises(ValueError):
        farthest_point_sample(points[:5], 6)


def test_padding_by_repetition_and_big_inputs():
    few = prepare_points(cloud(100), PointCloudConfig(num_points=1024))
    assert few.shape == (1024, 3) and len(np.unique(few, axis=0)) == 100
    assert np.array_equal(few[:100], few[100:200])
    cfg = PointCloudConfig(num_points=128, max_fps_input=1000)
    big = prepare_points(cloud(20000), cfg)
    assert big.shape == (128, 3) and np.array_equal(big, prepare_points(cloud(20000), cfg))


def test_sample_surface_is_uniform_over_area():
    box = o3d.geometry.TriangleMesh.create_box(4.0, 1.0, 1.0)  # faces: 4, 4, 4, 4, 1, 1 (x ends)
    pts = sample_surface(np.asarray(box.vertices), np.asarray(box.triangles), 18000, np.random.default_rng(0))
    on_ends = np.isclose(pts[:, 0], 0) | np.isclose(pts[:, 0], 4)
    assert abs(on_ends.mean() - 2 / 18) < 0.01
    flat = np.zeros((3, 3))
    assert sample_surface(flat, np.array([[0, 1, 2]]), 10, np.random.default_rng(0)) is None


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError):
        PointCloudConfig(num_point=10)
    with pytest.raises(ValueError):
        PointCloudConfig(sampling="random")
    with pytest.raises(ValueError):
        PointCloudConfig(num_points=0)


def test_encoder_is_permutation_invariant_and_exposes_feature_dim():
    torch.manual_seed(0)
    enc = PointNetEncoder(feature_dim=32, hidden=[16, 24]).eval()
    x = torch.randn(2, 300, 3)
    out = enc(x)
    assert out.shape == (2, 32) and enc.feature_dim == 32
    assert torch.allclose(out, enc(x[:, torch.randperm(300)]), atol=1e-6)


def test_runs_through_the_host_and_the_cli_check(tmp_path):
    run = run_in_host("pointcloud", tmp_path, distribution="gramx-pointcloud")
    assert run.status.modalities == ["pointcloud"] and run.embeddings.shape == (4, 8)
    with fresh_host() as host:
        assert host.get_modality("pointcloud") is POINTCLOUD
        assert main(["plugins", "check", "pointcloud"]) == 0


def test_missing_libusb_is_reported_at_discovery(monkeypatch):
    import ctypes
    import sys

    import gramx_pointcloud

    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(ImportError, match="libusb-1.0-0"):
        gramx_pointcloud._check_open3d()
