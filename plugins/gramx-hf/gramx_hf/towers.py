"""Two-tower transformers models (CLIP, SigLIP, CLAP): their towers, processors and the tower encoder.

A two-tower checkpoint holds a text tower and an image (CLIP, SigLIP) or audio (CLAP) tower,
each with its own projection into the pair's shared space; ``get_text_features``,
``get_image_features`` and ``get_audio_features`` compute a tower's embedding.
:class:`TowerEncoder` keeps one tower of such a model and returns exactly that embedding, so
a gramx modality built on it (with an identity head) reproduces the checkpoint's space. The
modality plugins build it for ``output: projected`` (gramx-text, and gramx-video / gramx-audio
with ``encoder: hf``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gramx.errors import ConfigError

__all__ = ["TwoTower", "ARCHITECTURES", "SUPPORTED", "architecture", "two_tower", "load_pretrained",
           "preprocessor", "feature_dim", "TowerEncoder"]


@dataclass(frozen=True)
class TwoTower:
    """What gramx needs to know about one two-tower architecture."""

    towers: Mapping[str, tuple[str, ...]]  # modality -> the model's modules that compute its embedding
    padding: str = "longest"  # how its texts are padded ("max_length": SigLIP pools the last position)
    position_offset: int = 0  # text positions the tokenizer cannot use (RoBERTa's padding offset)

    @property
    def modalities(self) -> list[str]:
        return list(self.towers)


ARCHITECTURES: dict[str, TwoTower] = {
    "CLIPModel": TwoTower({"text": ("text_model", "text_projection"), "image": ("vision_model", "visual_projection")}),
    "SiglipModel": TwoTower({"text": ("text_model",), "image": ("vision_model",)}, padding="max_length"),
    "ClapModel": TwoTower({"text": ("text_model", "text_projection"), "audio": ("audio_model", "audio_projection")},
                          position_offset=2),
}
SUPPORTED = ", ".join(ARCHITECTURES)
_MODEL_TYPES = {"clip": "CLIPModel", "siglip": "SiglipModel", "clap": "ClapModel"}


def architecture(path: str | Path) -> str:
    """The architecture named by the ``config.json`` of a transformers folder (e.g. ``CLIPModel``)."""
    config_file = Path(path) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a transformers model folder (no config.json)",
                          hint="give the folder save_pretrained wrote (or `hf download` fetched)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config_file}: cannot read it ({exc})") from None
    names = config.get("architectures") or [_MODEL_TYPES.get(config.get("model_type"), config.get("model_type"))]
    return str(names[0])


def two_tower(path: str | Path, modality: str | None = None) -> tuple[str, TwoTower]:
    """The architecture of a two-tower folder and its table entry; a clear error for any other."""
    name = architecture(path)
    if name not in ARCHITECTURES:
        raise ConfigError(f"{path} holds a {name}; gramx supports the two-tower models {SUPPORTED}",
                          hint="give the folder of a CLIP, SigLIP or CLAP checkpoint (its config.json names the "
                          "architecture)")
    spec = ARCHITECTURES[name]
    if modality is not None and modality not in spec.towers:
        raise ConfigError(f"{path} holds a {name}, whose towers encode {' and '.join(spec.modalities)}, not {modality}",
                          hint=f"give {modality} a checkpoint with a {modality} tower, or the default output: pooled")
    return name, spec


def load_pretrained(path: str | Path) -> nn.Module:
    """``AutoModel.from_pretrained`` on a local folder, without progress bars; errors name the folder."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the transformers model in {path}: {exc}",
                          hint="the folder needs config.json and the weights, as save_pretrained writes them") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@functools.lru_cache(maxsize=None)
def preprocessor(path: str, modality: str) -> Any:
    """The image processor (``image``) or audio feature extractor (``audio``) saved in a folder, loaded once."""
    import transformers

    auto = transformers.AutoImageProcessor if modality == "image" else transformers.AutoFeatureExtractor
    try:
        return auto.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: no {'image processor' if modality == 'image' else 'audio feature extractor'} "
                          f"({exc})", hint="the folder needs preprocessor_config.json (or processor_config.json)"
                          ) from exc


def feature_dim(config: Any, modality: str) -> int:
    """The size of a tower's embedding, from the two-tower model's transformers config."""
    if getattr(config, "projection_dim", None):  # CLIP, CLAP: a projection layer per tower
        return int(config.projection_dim)
    tower = config.text_config if modality == "text" else config.vision_config  # SigLIP: the towers' own heads
    return int(getattr(tower, "projection_size", None) or tower.hidden_size)


class TowerEncoder(nn.Module):
    """One tower of a two-tower model: a batch -> ``get_<tower>_features(batch)``, the checkpoint's embedding.

    The other tower's modules are dropped. ``pretrained_weights`` names the folder, so a
    frozen tower is stored by reference (see :mod:`gramx.model.pretrained`) and can get LoRA
    adapters. Text batches are token dicts, image batches ``[B, 3, H, W]`` pixel values,
    audio batches the feature extractor's dict (``input_features``, ``is_longer``).
    """

    _INPUTS = {"text": ("input_ids", "attention_mask"), "audio": ("input_features", "is_longer")}

    def __init__(self, path: str | Path, modality: str, freeze: bool = True):
        super().__init__()
        path = Path(path).expanduser().resolve()
        name, spec = two_tower(path, modality)
        model = load_pretrained(path)
        for other, modules in spec.towers.items():
            if other != modality:
                for module in modules:
                    setattr(model, module, None)
        self.model = model
        self.modality = modality
        self.architecture = name
        self.feature_dim = feature_dim(model.config, modality)
        self.pretrained_weights = {"model.": str(path)}
        if freeze:
            self.model.requires_grad_(False)

    @property
    def max_text_length(self) -> int:
        """The most tokens the text tower takes."""
        config = self.model.config.text_config
        return int(config.max_position_embeddings) - ARCHITECTURES[self.architecture].position_offset

    def forward(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, Mapping):
            inputs = {k: batch[k] for k in self._INPUTS[self.modality] if k in batch}
        else:
            inputs = {"pixel_values": batch}
        out = getattr(self.model, f"get_{self.modality}_features")(**inputs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
