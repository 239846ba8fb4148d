"""gramx: align any number of modalities in one embedding space with the Gram volume."""

from gramx import embed, evaluate, losses
from gramx.errors import ConfigError, GramxError, LoadError, PluginError
from gramx.files.config_files import NameOrPath
from gramx.losses.table import LossType
from gramx.model.model import GramxModel, load_model
from gramx.plugins.hookspecs import hookimpl, hookspec
from gramx.plugins.host import available_modalities, get_modality, register_plugin
from gramx.plugins.modality import Modality
from gramx.scores.topk import merge_topk
from gramx.scores.volume import VolumeIndex, gram_volume, volume_matrix, volume_topk
from gramx.version import __version__

__all__ = [
    "ConfigError",
    "GramxError",
    "GramxModel",
    "LoadError",
    "LossType",
    "Modality",
    "NameOrPath",
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
