"""Reading point clouds and meshes with open3d and turning them into fixed-size samples.

A sample is a float32 ``[num_points, 3]`` tensor, centred on its centroid and scaled into
the unit sphere (the farthest point at distance 1). Meshes (files with triangles) are
first sampled uniformly over their surface with a seeded sampler; clouds are used as read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gramx.errors import LoadError

from gramx_pointcloud.config import PointCloudConfig
from gramx_pointcloud.formats import FormatProblem, inspect

__all__ = [
    "CLOUD_EXTENSIONS",
    "EXTENSIONS",
    "MESH_EXTENSIONS",
    "farthest_point_sample",
    "load_pointcloud",
    "normalize",
    "open3d",
    "prepare_points",
    "read_points",
    "sample_surface",
]

MESH_EXTENSIONS = (".ply", ".obj", ".off")  # a .ply without faces is a point cloud
CLOUD_EXTENSIONS = (".pcd", ".xyz", ".xyzn", ".xyzrgb")
EXTENSIONS = MESH_EXTENSIONS + CLOUD_EXTENSIONS


def open3d():
    """Import open3d on first use (it takes seconds), with a helpful error if it cannot load."""
    try:
        import open3d as o3d
    except ImportError as exc:  # e.g. "libusb-1.0.so.0: cannot open shared object file"
        raise ImportError(
            f"gramx-pointcloud needs open3d, which failed to import ({exc}); install open3d-cpu==0.20.0 "
            "and, on Linux, the system library libusb-1.0-0 (apt-get install libusb-1.0-0)"
        ) from exc
    return o3d


@contextlib.contextmanager
def _quiet(o3d):
    # Our own checks report problems as LoadError; open3d's warnings would only repeat them.
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        yield


def read_points(value: Any, cfg: PointCloudConfig) -> np.ndarray:
    """Read a file as float64 ``[n, 3]`` points (a mesh is sampled over its surface).

    Raises :class:`gramx.LoadError` naming ``value`` for a missing, empty, unsupported or
    corrupt file. NaN/inf coordinates are returned as they are.
    """
    path = Path(value)
    if not path.exists():
        raise LoadError(value, "file not found")
    if not path.is_file():
        raise LoadError(value, "not a file")
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise LoadError(
            value, f"unsupported point-cloud file type {ext or '(no extension)'!r}; use one of {', '.join(EXTENSIONS)}"
        )
    kind = ext[1:].upper()
    if path.stat().st_size == 0:
        raise LoadError(value, "file is empty (0 bytes)")
    try:
        declared = inspect(path, ext)
    except FormatProblem as exc:
        raise LoadError(value, f"corrupt {kind} file: {exc}") from None
    if declared.points == 0 or not declared.has_data:
        raise LoadError(value, f"point cloud is empty: the {kind} file holds no points")

    o3d = open3d()
    with _quiet(o3d):
        if ext in MESH_EXTENSIONS:
            mesh = o3d.io.read_triangle_mesh(str(path))
            vertices, triangles = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
        else:
            vertices, triangles = np.asarray(o3d.io.read_point_cloud(str(path)).points), np.empty((0, 3), int)
    if len(vertices) == 0:
        hint = "OBJ files need faces; store plain point lists as .xyz or .ply" if ext == ".obj" else None
        raise LoadError(value, f"unreadable or corrupt {kind} file: open3d read no points from it", hint)
    if declared.points is not None and len(vertices) != declared.points:
        raise LoadError(value, f"corrupt {kind} file: it declares {declared.points} points but {len(vertices)} could be read")
    if declared.faces and len(triangles) == 0:
        raise LoadError(value, f"corrupt {kind} file: it declares {declared.faces} faces but none could be read")
    if len(triangles) == 0:
        return vertices.astype(np.float64, copy=True)
    if not np.isfinite(vertices).all():
        raise LoadError(value, f"mesh has {_count_bad(vertices)} vertices with NaN/inf coordinates")
    rng = np.random.default_rng(cfg.seed)
    points = sample_surface(vertices, triangles, cfg.mesh_samples, rng)
    return vertices.astype(np.float64, copy=True) if points is None else points


def _count_bad(points: np.ndarray) -> int:
    return int((~np.isfinite(points).all(axis=1)).sum())


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """``n`` points uniformly distributed over a triangle mesh's surface (area-weighted).

    Returns ``None`` when the mesh has no area (all triangles degenerate).
    """
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    tri = rng.choice(len(t), size=n, p=areas / total)
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1  # fold the far half of the unit square back into the triangle
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    a, b, c = a[tri], b[tri], c[tri]
    return a + u[:, None] * (b - a) + w[:, None] * (c - a)


def normalize(points: np.ndarray) -> np.ndarray:
    """Centre on the centroid and scale so the farthest point lies on the unit sphere."""
    centred = points - points.mean(axis=0)
    radius = np.sqrt((centred**2).sum(axis=1).max())
    return centred / radius if radius > 0 else centred


def farthest_point_sample(points: np.ndarray, k: int) -> np.ndarray:
    """``k`` of ``points`` chosen by farthest-point sampling, starting from point 0.

    Deterministic (no randomness); needs ``k <= len(points)``.
    """
    if k > len(points):
        raise ValueError(f"cannot pick {k} of {len(points)} points")
    o3d = open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(points, dtype=np.float64)))
    return np.asarray(cloud.farthest_point_down_sample(k).points)


def prepare_points(points: np.ndarray, cfg: PointCloudConfig, source: Any = "<array>") -> np.ndarray:
    """Raw ``[n, 3]`` points -> normalised float32 ``[num_points, 3]``.

    Non-finite points raise :class:`gramx.LoadError` naming ``source`` (or are dropped with
    ``drop_nonfinite``); then: normalise, down-sample (FPS or voxel) or pad by repetition,
    and normalise the result again so every sample is exactly centred and in the unit sphere.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise LoadError(source, f"expected points of shape [n, 3], got {tuple(points.shape)}")
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        if not cfg.drop_nonfinite:
            raise LoadError(
                source, f"{int((~finite).sum())} of {len(points)} points have NaN/inf coordinates",
                hint="fix the file, or set drop_nonfinite: true to drop such points",
            )
        points = points[finite]
        if len(points) == 0:
            raise LoadError(source, "no point has finite coordinates")
    rng = np.random.default_rng(cfg.seed)
    points = normalize(points)
    k = cfg.num_points
    if cfg.sampling == "voxel":
        o3d = open3d()
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        points = np.asarray(cloud.voxel_down_sample(cfg.voxel_size).points)
        if len(points) > k:
            points = points[np.sort(rng.choice(len(points), size=k, replace=False))]
    elif len(points) > k:
        if len(points) > cfg.max_fps_input:
            points = points[np.sort(rng.choice(len(points), size=cfg.max_fps_input, replace=False))]
        points = farthest_point_sample(points, k)
    if len(points) < k:
        points = points[np.arange(k) % len(points)]  # pad by repeating the cloud
    return normalize(points).astype(np.float32)


def load_pointcloud(value: Any, cfg: PointCloudConfig) -> torch.Tensor:
    """The ``pointcloud`` modality's loader: a file path -> float32 ``[num_points, 3]``."""
    return torch.from_numpy(prepare_points(read_points(value, cfg), cfg, source=value))
