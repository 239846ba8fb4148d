"""gramx: align any number of modalities in one embedding space with the Gram volume."""

from gramx import embed, evaluate, losses
from gramx.errors import ConfigError, GramxError, LoadError, PluginError
from gramx.hookspecs import hookimpl, hookspec
from gramx.modality import Modality
from gramx.model import GramxModel, load_model
from gramx.plugins import available_modalities, get_modality, register_plugin
from gramx.version import __version__
from gramx.topk import merge_topk
from gramx.volume import VolumeIndex, gram_volume, volume_matrix, volume_topk

__all__ = [
    "ConfigError",
    "GramxError",
    "GramxModel",
    "LoadError",
    "Modality",
    "PluginError",
    "VolumeIndex",
    "__version__",
    "available_modalities",
    "embed",
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
