"""Regenerate the sample depth maps shipped in gramx_depth/samples (numpy + Pillow only).

- sphere_mm.png: 64x64 16-bit PNG, millimetres, a sphere of radius 0.5 m whose centre is
  2.5 m from a pinhole camera (45 degree field of view); background 0 (invalid).
- cone_m.npy: 48x64 float32 metres, an upright cone seen from the side; background NaN.
"""

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "gramx_depth" / "samples"


def rays(height: int, width: int, fov_deg: float = 45.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel x/z and y/z slopes of a pinhole camera looking along +z."""
    f = (width / 2) / np.tan(np.radians(fov_deg) / 2)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return (xs - width / 2) / f, (ys - height / 2) / f


def sphere(size: int = 64, radius: float = 0.5, distance: float = 2.5) -> np.ndarray:
    a, b = rays(size, size)
    # Ray (a t, b t, t) hits |p - (0, 0, d)| = r where (a^2 + b^2 + 1) t^2 - 2 d t + d^2 - r^2 = 0.
    q = a**2 + b**2 + 1
    disc = distance**2 - q * (distance**2 - radius**2)
    z = (distance - np.sqrt(np.maximum(disc, 0))) / q
    return np.where(disc > 0, z, np.nan)


def cone(height_px: int = 48, width_px: int = 64, distance: float = 2.0) -> np.ndarray:
    a, b = rays(height_px, width_px)
    z = np.full(a.shape, np.nan)
    for t in np.linspace(1.2, 2.8, 400)[::-1]:  # march back to front, keep the nearest hit
        x, y, depth = a * t, b * t, t - distance
        r = 0.4 * (y + 0.5) / 1.0  # apex at y = -0.5, base radius 0.4 at y = 0.5
        inside = (y > -0.5) & (y < 0.5) & (x**2 + depth**2 <= r**2)
        z = np.where(inside, t, z)
    return z.astype(np.float32)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    mm = np.nan_to_num(np.round(sphere() * 1000), nan=0).astype(np.uint16)
    Image.fromarray(mm).save(OUT / "sphere_mm.png")
    np.save(OUT / "cone_m.npy", cone())
    print("wrote", *sorted(p.name for p in OUT.iterdir()))
