"""Regenerate the sample files shipped in gramx_pointcloud/samples.

- cone.ply: 512 points sampled from a cone's surface (binary float32 PLY, a point cloud).
- torus.off: a coarse torus mesh (OFF, 72 vertices and 144 triangles).
"""

from pathlib import Path

import numpy as np
import open3d as o3d

from gramx_pointcloud.io import sample_surface
from gramx_pointcloud.shapes import write_ply

OUT = Path(__file__).resolve().parents[1] / "gramx_pointcloud" / "samples"

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    cone = o3d.geometry.TriangleMesh.create_cone(radius=0.3, height=0.8, resolution=24)
    points = sample_surface(np.asarray(cone.vertices), np.asarray(cone.triangles), 512, np.random.default_rng(0))
    write_ply(points, OUT / "cone.ply")
    torus = o3d.geometry.TriangleMesh.create_torus(
        torus_radius=0.5, tube_radius=0.15, radial_resolution=12, tubular_resolution=6
    )
    o3d.io.write_triangle_mesh(str(OUT / "torus.off"), torus, write_ascii=True)
    print("wrote", *sorted(p.name for p in OUT.iterdir()))
