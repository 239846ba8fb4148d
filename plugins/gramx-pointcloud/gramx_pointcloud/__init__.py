"""gramx plugin: the ``pointcloud`` modality, and a synthetic 3-D shapes dataset.

Point clouds (PLY, PCD, XYZ) and meshes (OBJ, OFF, PLY with faces) are read with open3d;
meshes are sampled uniformly over their surface. Every sample is centred, scaled into the
unit sphere and brought to ``num_points`` points (farthest-point sampling by default), a
float32 ``[num_points, 3]`` tensor; a PointNet-style encoder maps a batch to
``[B, feature_dim]``. :mod:`gramx_pointcloud.shapes` writes a small (depth, pointcloud,
text) dataset of primitive shapes. open3d is imported on first use, not with the plugin.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path

import gramx

from gramx_pointcloud.config import PointCloudConfig
from gramx_pointcloud.encoder import PointNetEncoder, build_encoder
from gramx_pointcloud.io import farthest_point_sample, load_pointcloud, normalize, prepare_points, read_points

__all__ = [
    "POINTCLOUD",
    "PointCloudConfig",
    "PointNetEncoder",
    "build_encoder",
    "farthest_point_sample",
    "load_pointcloud",
    "normalize",
    "prepare_points",
    "read_points",
]
__version__ = "0.1.0"


def _check_open3d() -> None:
    """Fail plugin discovery with a clear message (not the first load) when open3d cannot work.

    Importing open3d takes seconds, so only its presence and, on Linux, the system library
    its binary links against (libusb-1.0) are checked here.
    """
    if importlib.util.find_spec("open3d") is None:
        raise ImportError("gramx-pointcloud needs open3d: pip install open3d-cpu==0.20.0")
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libusb-1.0.so.0")
        except OSError:
            raise ImportError(
                "open3d needs the system library libusb-1.0-0: apt-get install libusb-1.0-0 "
                "(the project's scripts/setup.sh installs it)"
            ) from None


_check_open3d()

SAMPLES_DIR = Path(__file__).parent / "samples"

POINTCLOUD = gramx.Modality(
    name="pointcloud",
    load=load_pointcloud,
    build_encoder=build_encoder,
    config=PointCloudConfig,
    description="point clouds (PLY/PCD/XYZ) and meshes (OBJ/OFF/PLY) via open3d; PointNet encoder",
    value_is_path=True,
    samples=(str(SAMPLES_DIR / "cone.ply"), str(SAMPLES_DIR / "torus.off")),
)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(POINTCLOUD)
