"""gramx: align any number of modalities in one embedding space with the Gram volume."""

from gramx.volume import VolumeIndex, gram_volume, merge_topk, volume_matrix, volume_topk

__version__ = "0.1.0"

__all__ = [
    "VolumeIndex",
    "gram_volume",
    "merge_topk",
    "volume_matrix",
    "volume_topk",
]
