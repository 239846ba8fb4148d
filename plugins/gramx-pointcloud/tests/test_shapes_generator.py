"""Tests of the synthetic 3-D shapes generator (gramx_pointcloud.shapes)."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from gramx.data.loading import ManifestDataset
from gramx.data.manifest import read_manifest
from gramx.testing import check_modality
from gramx_pointcloud import POINTCLOUD, PointCloudConfig
from gramx_pointcloud.shapes import CLASSES, Shape, caption, generate, main, make_shape, render_depth


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "seed0"
    counts = generate(out, per_class=2, seed=0, test_fraction=0.5)
    return out, counts


def test_manifests_and_classes(dataset):
    out, counts = dataset
    assert counts == {"classes": 10, "train": 10, "test": 10}
    assert (out / "classes.txt").read_text().splitlines() == list(CLASSES)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == 10 and sorted(r["label"] for r in rows) == list(range(10))
        for row in rows:
            assert set(row) == {"id", "label", "text", "depth", "pointcloud"}
            name = CLASSES[row["label"]]
            assert row["id"].startswith(name) and name in row["text"]
            assert (out / row["depth"]).is_file() and (out / row["pointcloud"]).is_file()
            assert not row["depth"].startswith("/")  # relative to the manifest's folder
        manifest = read_manifest(out / f"{split}.jsonl")  # the core's reader accepts it
        assert manifest.columns == ["depth", "pointcloud", "text"] and manifest.has_labels


def test_written_files(dataset):
    out, _ = dataset
    depth = Image.open(out / "depth" / "torus_000.png")
    assert depth.mode.startswith("I;16") and depth.size == (64, 64)
    mm = np.asarray(depth)
    valid = mm[mm > 0]
    assert 0 < valid.size < mm.size  # the shape and some background (0 = invalid)
    assert 2000 - 700 <= valid.min() and valid.max() <= 3000 + 700  # camera 2-3 m away, radius <= 0.7 m
    points = np.asarray(o3d.io.read_point_cloud(str(out / "pointcloud" / "torus_000.ply")).points)
    assert points.shape == (2048, 3) and np.linalg.norm(points, axis=1).max() <= 0.7 + 1e-5


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    out, _ = dataset
    generate(tmp_path / "again", per_class=2, seed=0, test_fraction=0.5)
    assert digest(tmp_path / "again") == digest(out)
    generate(tmp_path / "other", per_class=2, seed=1, test_fraction=0.5, classes=["cone"])
    assert digest(tmp_path / "other")["pointcloud/cone_000.ply"] != digest(out)["pointcloud/cone_000.ply"]
    assert digest(tmp_path / "other")["depth/cone_000.png"] != digest(out)["depth/cone_000.png"]


def test_plugins_load_the_generated_data(dataset):
    out, _ = dataset
    manifest = read_manifest(out / "train.jsonl")
    rows = manifest.rows[::3]
    clouds = [str(out / r.values["pointcloud"]) for r in rows]
    assert check_modality(POINTCLOUD, clouds, cfg=PointCloudConfig(num_points=256))
    gramx_depth = pytest.importorskip("gramx_depth")
    maps = [str(out / r.values["depth"]) for r in rows]
    assert check_modality(gramx_depth.DEPTH, maps)
    data = ManifestDataset(manifest, {
        "depth": (gramx_depth.DEPTH, gramx_depth.DepthConfig()),
        "pointcloud": (POINTCLOUD, PointCloudConfig(num_points=128)),
    })
    item = data[0]
    assert item["error"] is None
    assert item["values"]["depth"].shape == (2, 64, 64) and item["values"]["pointcloud"].shape == (128, 3)


def test_sphere_depth_is_smallest_at_the_centre():
    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=0.5, resolution=40)
    depth = render_depth(sphere, eye=(2.5, 0.0, 0.0), size=64)
    hit = np.isfinite(depth)
    assert hit.sum() > 0 and not hit[0, 0] and not hit[-1, -1]  # corners see background
    row, col = np.unravel_index(np.where(hit, depth, np.inf).argmin(), depth.shape)
    assert abs(row - 31.5) <= 1 and abs(col - 31.5) <= 1
    assert abs(depth[hit].min() - 2.0) < 0.01  # 2.5 m to the centre minus the radius
    assert np.allclose(depth, depth[::-1], equal_nan=True, atol=1e-3)  # symmetric top/bottom
    from_above = render_depth(sphere, eye=(0.0, 0.0, 3.0), size=32)  # the up-vector fallback
    assert abs(np.nanmin(np.where(np.isfinite(from_above), from_above, np.nan)) - 2.5) < 0.01


def test_shapes_fit_the_view_and_captions_name_the_class():
    for label, name in enumerate(CLASSES):
        rng = np.random.default_rng([0, label, 0])
        shape = make_shape(name, rng)
        radius = np.linalg.norm(np.asarray(shape.mesh.vertices), axis=1).max()
        assert 0.3 - 1e-9 <= radius <= 0.7 + 1e-9
        assert len(shape.mesh.triangles) > 0
        for _ in range(5):
            text = caption(shape, rng)
            assert name in text and "  " not in text and not text.endswith(" ")
    for shape in (Shape("octahedron", None, "large", "elongated"), Shape("icosahedron", None, "small", "")):
        texts = {caption(shape, np.random.default_rng(i)) for i in range(40)}
        assert len(texts) > 2 and not any(re.search(r"\ba [aeiou]", t) for t in texts), texts  # "an", not "a"


def test_command_line(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--per-class", "1", "--classes", "box,sphere", "--points", "64",
                 "--depth-size", "32", "--test-fraction", "0"]) == 0
    assert "wrote 2 train + 0 test samples of 2 classes" in capsys.readouterr().out
    assert (tmp_path / "cli" / "classes.txt").read_text() == "box\nsphere\n"
    assert Image.open(tmp_path / "cli" / "depth" / "sphere_000.png").size == (32, 32)
    for wrong in (["--classes", "pyramid"], ["--classes", "box,box"], ["--points", "0"], ["--test-fraction", "1"]):
        with pytest.raises(SystemExit):
            main([str(tmp_path / "bad"), *wrong])
    assert not (tmp_path / "bad").exists()
