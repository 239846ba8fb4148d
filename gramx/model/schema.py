"""The model's schema: heads, adapters and each modality's record, as a model's ``config.json`` holds them.

A run file's modalities and a model directory's ``config.json`` share these sections, so a
model can be rebuilt from either. Every size is bounded (:data:`gramx.files.validation.MAX_WIDTH`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from gramx.files.validation import MAX_DEPTH, MAX_WIDTH, Section
from gramx.model.pretrained import WeightsRef

__all__ = ["FORMAT", "HeadConfig", "LoraConfig", "SavedPlugin", "SavedProjector", "SavedModality", "ModelConfig"]

#: The ``format`` of a model directory's config.json.
FORMAT = "gramx-model"


class HeadConfig(Section):
    """The projection head from an encoder's features into the shared space."""

    hidden: int = Field(0, ge=0, le=MAX_WIDTH, description="hidden width of a 2-layer MLP head; 0 = one linear layer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the last layer (MLP heads)")
    in_dim: int | None = Field(
        None, ge=1, le=MAX_WIDTH, description="encoder feature size; only needed when the encoder lacks `feature_dim`"
    )
    identity: bool = Field(
        False, description="no head: the encoder's features are already in the shared space (e.g. an imported "
        "CLIP tower, whose features are its own projection); they must have `dim` features"
    )
    batch_norm: bool = Field(
        False, description="standardise each output dimension over the batch (BatchNorm, no affine; running "
        "statistics at inference) before the L2 normalisation: the modality's embeddings cannot collapse to one "
        "vector, which lets joint objectives train from scratch"
    )

    @model_validator(mode="after")
    def _check_identity(self) -> "HeadConfig":
        if self.identity and (self.hidden or self.batch_norm):
            raise ValueError("an identity head has no layers: set hidden to 0, batch_norm to false or identity to false")
        return self


class LoraConfig(Section):
    """Low-rank adapters (LoRA) on an encoder's pretrained weights, which then stay frozen.

    Needs a plugin that adds adapters (gramx-hf, through peft) and an encoder that names its
    pretrained weights (the transformers encoders of the built-in plugins do).
    """

    r: int = Field(8, ge=1, le=MAX_WIDTH, description="rank of the adapters")
    alpha: float = Field(16.0, gt=0, description="scaling: the update is alpha / r times the low-rank product")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input in training")
    target_modules: list[str] = Field(
        ["q_proj", "v_proj", "query", "value"], min_length=1,
        description="names (last part of the module path) of the layers that get adapters; the default "
        "takes the attention query and value projections of CLIP, SigLIP, CLAP, BERT, ViT and wav2vec2 "
        "models",
    )


class SavedPlugin(Section):
    """Which installed plugin provided a modality when the model was saved."""

    name: str | None = None
    distribution: str | None = None
    version: str | None = None


class SavedProjector(Section):
    """The options of the :class:`gramx.extend.bridge.Projector` of a bridged modality."""

    dim_in: int = Field(ge=2, le=MAX_WIDTH, description="the dimension of the space the modality was trained in")
    dim_out: int = Field(ge=2, le=MAX_WIDTH, description="this model's dimension")
    hidden: int = Field(ge=1, le=MAX_WIDTH)
    depth: int = Field(ge=0, le=MAX_DEPTH)


class SavedModality(Section):
    """How to rebuild one modality's encoder and head."""

    plugin: SavedPlugin = Field(default_factory=SavedPlugin)
    config: dict[str, Any] = Field(default_factory=dict, description="the plugin's config, as JSON")
    head: HeadConfig = Field(default_factory=HeadConfig)
    lora: LoraConfig | None = Field(None, description="LoRA adapters on the encoder's pretrained weights")
    feature_dim: int | None = Field(None, ge=1, description="the encoder's output size (checked on loading)")
    pretrained: list[WeightsRef] = Field(
        default_factory=list, description="frozen encoder weights stored by reference to a pretrained folder"
    )
    bridge: SavedProjector | None = Field(
        None, description="the projector mapping this modality from the space it was trained in into this "
        "model's space; None for modalities trained in this space"
    )


class ModelConfig(Section):
    """The contents of a model directory's ``config.json``."""

    format: Literal["gramx-model"] = FORMAT
    format_version: Literal[1] = 1
    gramx_version: str = ""
    dim: int = Field(ge=2, le=MAX_WIDTH)
    score: Literal["volume", "area", "mip", "cosine", "singular"] = Field(
        "volume", description="the similarity the model was trained with, which retrieval and zero-shot use")
    modalities: dict[str, SavedModality]
    training: dict[str, Any] = Field(default_factory=dict, description="what the model was trained on")
    metrics: dict[str, Any] = Field(default_factory=dict, description="the last evaluation report")
    lineage: list[dict[str, Any]] = Field(
        default_factory=list, description="how the model grew: the models it extends and what was added"
    )
