"""gramx: align any number of modalities in one embedding space with the Gram volume."""

from gramx import evaluate, losses
from gramx.errors import ConfigError, GramxError, LoadError, PluginError
from gramx.hookspecs import hookimpl, hookspec
from gramx.modality import Modality
from gramx.model import GramxModel, load_model
from gramx.plugins import available_modalities, get_modality, register_plugin
from gramx.volume import VolumeIndex, gram_volume, merge_topk, volume_matrix, volume_topk

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GramxError",
    "GramxModel",
    "LoadError",
    "Modality",
    "PluginError",
    "VolumeIndex",
    "available_modalities",
    "evaluate",
    "get_modality",
    "gram_volume",
    "hookimpl",
    "hookspec",
    "load_model",
    "losses",
    "merge_topk",
    "register_plugin",
    "volume_matrix",
    "volume_topk",
]
