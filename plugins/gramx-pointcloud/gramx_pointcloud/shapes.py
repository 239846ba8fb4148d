"""A synthetic 3-D shapes dataset: (depth map, point cloud, caption) triples of primitives.

Each sample is one of ten primitive shapes built with open3d (box, sphere, cylinder, cone,
torus, capsule, arrow, tetrahedron, octahedron, icosahedron) with a random size, aspect and
rotation. For each sample the generator writes

- ``pointcloud/<id>.ply``: ``num_points`` points drawn uniformly from the surface,
- ``depth/<id>.png``: a 16-bit depth map in millimetres (0 = background), ray-cast with
  ``open3d.t.geometry.RaycastingScene`` from a random viewpoint looking at the shape,
- a caption naming the class (``"a long cylinder"``, ``"a small torus"``),

plus ``train.jsonl`` / ``test.jsonl`` manifests (keys ``id``, ``label``, ``text``, ``depth``,
``pointcloud``; paths relative to the output folder) and ``classes.txt`` (line i = label i).
Output depends only on the arguments: sample i of class c (its index in ``CLASSES``) uses
a generator seeded with ``(seed, c, i)``, so the same seed gives byte-identical files.

    gramx-shapes OUT_DIR --per-class 60 --seed 0
    python -m gramx_pointcloud.shapes OUT_DIR --per-class 60 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gramx_pointcloud.io import open3d, sample_surface

__all__ = [
    "CLASSES",
    "Shape",
    "caption",
    "generate",
    "main",
    "make_shape",
    "random_rotation",
    "render_depth",
    "write_depth_png",
    "write_ply",
]

CLASSES = (
    "box", "sphere", "cylinder", "cone", "torus",
    "capsule", "arrow", "tetrahedron", "octahedron", "icosahedron",
)
SIZE_RANGE = (0.3, 0.7)  # metres: radius of each shape's bounding sphere (so the camera sees all of it)
CAMERA_DISTANCE = (2.0, 3.0)  # metres from the shape's centre
FOV_DEG = 45.0


@dataclass
class Shape:
    """One generated shape: its mesh (centred at the origin) and words describing it."""

    name: str
    mesh: object  # open3d.geometry.TriangleMesh
    size_word: str
    adjective: str


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ratio_word(ratio: float, low: float, high: float, low_word: str, high_word: str, mid_word: str = "") -> str:
    return low_word if ratio < low else high_word if ratio > high else mid_word


def _build(name: str, rng: np.random.Generator):
    """A random-proportioned mesh of class ``name`` (about unit size) and its shape adjective."""
    o3d = open3d()
    G = o3d.geometry.TriangleMesh
    u = rng.uniform
    if name == "box":
        dims = np.exp(u(np.log(0.35), np.log(1.6), size=3))
        mesh = G.create_box(*dims)
        d = np.sort(dims)
        if d[2] / d[0] < 1.3:
            return mesh, "cube-shaped"
        return mesh, "flat" if d[0] < 0.5 * d[1] else "long" if d[2] > 1.7 * d[1] else "rectangular"
    if name == "sphere":
        return G.create_sphere(radius=1.0, resolution=16), "round"
    if name == "cylinder":
        r, h = u(0.3, 0.8), u(0.4, 2.0)
        return G.create_cylinder(radius=r, height=h, resolution=24), _ratio_word(h / (2 * r), 0.6, 1.6, "flat", "long")
    if name == "cone":
        r, h = u(0.35, 0.8), u(0.5, 2.0)
        return G.create_cone(radius=r, height=h, resolution=24), _ratio_word(h / (2 * r), 0.7, 1.5, "squat", "pointy")
    if name == "torus":
        tube = u(0.12, 0.5)
        mesh = G.create_torus(torus_radius=1.0, tube_radius=tube, radial_resolution=24, tubular_resolution=12)
        return mesh, _ratio_word(tube, 0.22, 0.38, "thin", "thick")
    if name == "capsule":
        r, h = u(0.25, 0.5), u(0.3, 1.4)
        mesh = G.create_sphere(radius=r, resolution=16)
        v = np.asarray(mesh.vertices)
        v[:, 2] += np.where(v[:, 2] >= 0, h / 2, -h / 2)  # pull the hemispheres apart
        mesh.vertices = o3d.utility.Vector3dVector(v)
        return mesh, _ratio_word((h + 2 * r) / (2 * r), 1.7, 2.6, "stubby", "long")
    if name == "arrow":
        cr = u(0.05, 0.12)
        kr, ch, kh = cr * u(1.8, 3.0), u(0.7, 1.4), u(0.3, 0.6)
        mesh = G.create_arrow(cylinder_radius=cr, cone_radius=kr, cylinder_height=ch, cone_height=kh, resolution=16)
        return mesh, _ratio_word((ch + kh) / (2 * kr), 3.5, 6.0, "short", "long")
    if name in ("tetrahedron", "octahedron", "icosahedron"):
        mesh = getattr(G, f"create_{name}")(radius=1.0)
        stretch = np.exp(u(np.log(0.8), np.log(1.25), size=3))
        mesh.vertices = o3d.utility.Vector3dVector(np.asarray(mesh.vertices) * stretch)
        return mesh, "stretched" if stretch.max() / stretch.min() > 1.25 else "regular"
    raise ValueError(f"unknown shape class {name!r}; choose from {', '.join(CLASSES)}")


def make_shape(name: str, rng: np.random.Generator) -> Shape:
    """A random instance of class ``name``: centred on its bounding box, randomly rotated,
    and scaled so its farthest vertex is ``SIZE_RANGE`` metres (uniform) from the centre."""
    mesh, adjective = _build(name, rng)
    radius = rng.uniform(*SIZE_RANGE)
    v = np.asarray(mesh.vertices)
    v = v - (v.min(axis=0) + v.max(axis=0)) / 2
    v = v @ random_rotation(rng).T
    v = v * (radius / np.sqrt((v**2).sum(axis=1).max()))
    mesh.vertices = open3d().utility.Vector3dVector(v)
    size_word = "small" if radius < 0.42 else "large" if radius > 0.58 else "medium-sized"
    return Shape(name, mesh, size_word, adjective)


_TEMPLATES = (
    "{a_size} {adj} {name}",
    "{a_adj} {name}",
    "{a_name} that looks {adj}",
    "a 3d model of {a_adj} {name}",
    "a rendering of {a_size} {adj} {name}",
    "{a_size} {name}",
    "{a_name}",
    "a depth scan of {a_size} {name}",
    "a 3d model of {a_name}",
    "a point cloud of {a_size} {name}",
)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(shape: Shape, rng: np.random.Generator) -> str:
    """A short English description of ``shape`` that always names its class."""
    adj = shape.adjective
    templates = _TEMPLATES if adj else tuple(t for t in _TEMPLATES if "adj" not in t)
    template = templates[rng.integers(len(templates))]
    return template.format(name=shape.name, adj=adj, a_name=_a(shape.name), a_adj=_a(adj) if adj else "",
                           a_size=_a(shape.size_word))


def render_depth(mesh, eye: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0),
                 size: int = 64, fov_deg: float = FOV_DEG) -> np.ndarray:
    """Ray-cast ``mesh`` from ``eye`` looking at ``center``: float32 ``[size, size]`` z-depth in
    metres (distance along the viewing axis), ``inf`` where no surface is hit."""
    o3d = open3d()
    eye, center = np.asarray(eye, dtype=np.float64), np.asarray(center, dtype=np.float64)
    forward = (center - eye) / np.linalg.norm(center - eye)
    up = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.95 else np.array([0.0, 1.0, 0.0])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        fov_deg=fov_deg, center=center.tolist(), eye=eye.tolist(), up=up.tolist(), width_px=size, height_px=size,
    )
    t_hit = scene.cast_rays(rays)["t_hit"].numpy()
    directions = rays.numpy()[..., 3:]
    return (t_hit * (directions @ forward)).astype(np.float32)  # ray length -> depth along the axis


def write_depth_png(depth_m: np.ndarray, path: Path) -> None:
    """Save metres as a 16-bit PNG in millimetres; non-finite / out-of-range pixels become 0."""
    from PIL import Image

    mm = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0)
    mm = np.where((mm > 0) & (mm < 65536), mm, 0).astype(np.uint16)
    Image.fromarray(mm).save(path)


def write_ply(points: np.ndarray, path: Path) -> None:
    """Save ``[n, 3]`` points as a binary float32 PLY with open3d."""
    o3d = open3d()
    cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32)))
    if not o3d.t.io.write_point_cloud(str(path), cloud):
        raise OSError(f"open3d could not write {path}")


def _sample(out: Path, sample_id: str, name: str, rng: np.random.Generator, num_points: int, depth_size: int) -> str:
    shape = make_shape(name, rng)
    mesh = shape.mesh
    points = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.triangles), num_points, rng)
    write_ply(points, out / "pointcloud" / f"{sample_id}.ply")
    direction = rng.normal(size=3)
    eye = direction / np.linalg.norm(direction) * rng.uniform(*CAMERA_DISTANCE)
    write_depth_png(render_depth(mesh, eye, size=depth_size), out / "depth" / f"{sample_id}.png")
    return caption(shape, rng)


def generate(out_dir: str | Path, per_class: int = 60, seed: int = 0, test_fraction: float = 0.2,
             num_points: int = 2048, depth_size: int = 64, classes: Sequence[str] = CLASSES) -> dict:
    """Write the dataset into ``out_dir``; return counts. The last ``round(per_class *
    test_fraction)`` samples of every class form the test split."""
    if min(per_class, num_points, depth_size) < 1:
        raise ValueError("per_class, num_points and depth_size must be at least 1")
    if not 0 <= test_fraction < 1:
        raise ValueError("test_fraction must be in [0, 1)")
    unknown = [c for c in classes if c not in CLASSES]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError("give at least one class, each once")
    if unknown:
        raise ValueError(f"unknown shape classes {unknown}; choose from {', '.join(CLASSES)}")
    out = Path(out_dir)
    for sub in ("depth", "pointcloud"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n_test = round(per_class * test_fraction)
    digits = max(3, len(str(per_class - 1)))
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for label, name in enumerate(classes):
        for i in range(per_class):
            sample_id = f"{name}_{i:0{digits}d}"
            rng = np.random.default_rng([seed, CLASSES.index(name), i])
            text = _sample(out, sample_id, name, rng, num_points, depth_size)
            row = {"id": sample_id, "label": label, "text": text,
                   "depth": f"depth/{sample_id}.png", "pointcloud": f"pointcloud/{sample_id}.ply"}
            splits["test" if i >= per_class - n_test else "train"].append(row)
    for split, rows in splits.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    return {"classes": len(classes), "train": len(splits["train"]), "test": len(splits["test"])}


def main(argv: Sequence[str] | None = None) -> int:
    """The ``gramx-shapes`` command."""
    parser = argparse.ArgumentParser(prog="gramx-shapes", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--per-class", type=int, default=60, help="samples per class (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of each class in test.jsonl (default 0.2)")
    parser.add_argument("--points", type=int, default=2048, help="points per cloud (default 2048)")
    parser.add_argument("--depth-size", type=int, default=64, help="depth maps are N x N pixels (default 64)")
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated subset of: " + ", ".join(CLASSES))
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    start = time.perf_counter()
    try:
        counts = generate(args.out_dir, args.per_class, args.seed, args.test_fraction, args.points, args.depth_size, classes)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {counts['train']} train + {counts['test']} test samples of {counts['classes']} classes "
          f"to {args.out_dir} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
