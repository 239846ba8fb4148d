"""The run configuration: its pydantic sections, validated with the plugins' own options (YAML: config_files).

A run is described by one YAML file::

    modalities:                 # name -> the plugin's own options + the projection head
      text:  {options: {freeze: true}, head: {hidden: 0}}
      audio: {options: {}}
    dim: 128                    # shared embedding dimension
    loss: {type: gram, anchor: text}
    data: {train: data/train.jsonl, val: data/test.jsonl, batch_size: 64}
    optim: {lr: 1.0e-3, epochs: 5}
    output: {dir: runs/demo}

Every section forbids unknown keys; a misspelt key is an error naming its path and the
keys allowed there. The options of a modality are validated by that modality's own config
class (from its plugin).

One rule for relative paths: a path written in a file (manifests, class lists, the output
folder, models of a bridge file, a plugin's path options) resolves against that file's
folder; a path typed on the command line (``--set data.val=x.jsonl``, arguments) against the
working folder (see :mod:`gramx.config_files`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from gramx.config_files import PathKind, apply_overrides, path_kind, read_yaml, resolve_paths
from gramx.errors import ConfigError
from gramx.objective import LOSS_TYPES, loss_type
from gramx.plugins import available_modalities, get_modality
from gramx.validation import Section, validate

__all__ = [
    "MAX_WIDTH",
    "MAX_DEPTH",
    "HeadConfig",
    "LoraConfig",
    "RunModality",
    "LossConfig",
    "DataConfig",
    "OptimConfig",
    "EvalConfig",
    "OutputConfig",
    "LoggingConfig",
    "RunConfig",
    "load_config",
    "parse_config",
    "config_schema",
]

#: Where every configuration error points.
REFERENCE_HINT = "every key is in the configuration reference: `gramx config reference` (docs/config-reference.md)"

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

#: The widest vector or layer a run file or a model's config.json may ask for (the space's
#: ``dim``, head widths, LoRA ranks): 65,536. A size read from a file never allocates more.
MAX_WIDTH = 1 << 16
#: The most residual blocks a bridge's projector may stack.
MAX_DEPTH = 64


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

    @model_validator(mode="after")
    def _check_identity(self) -> "HeadConfig":
        if self.identity and self.hidden:
            raise ValueError("an identity head has no hidden layer: set hidden to 0 or identity to false")
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


class RunModality(Section):
    """One modality of the run: its plugin options and its projection head."""

    options: dict[str, Any] = Field(
        default_factory=dict, description="options of the modality's plugin, checked by its own config class"
    )
    head: HeadConfig = Field(default_factory=HeadConfig)
    lora: LoraConfig | None = Field(
        None, description="train low-rank adapters (LoRA) on the encoder's frozen pretrained weights; None = off"
    )
    cache: bool = Field(
        True,
        description="when the encoder has no trainable parameters, compute its features once per "
        "distinct manifest value and reuse them",
    )
    preload: bool = Field(
        False,
        description="load every distinct training value once, before training, and keep the samples "
        "in memory (faster epochs; only for loads without random augmentation)",
    )
    _plugin_config: BaseModel | None = PrivateAttr(default=None)

    @property
    def plugin_config(self) -> BaseModel:
        """The options as an instance of the plugin's config class (set by validation)."""
        if self._plugin_config is None:
            raise ConfigError("modality options were not validated against their plugin")
        return self._plugin_config


class LossConfig(Section):
    """The training objective."""

    type: str = Field(
        "gram", description="gram: GRAM volume loss; triangle: TRIANGLE area loss (three modalities); symile: "
        "Symile multilinear inner product; pairwise: InfoNCE to the anchor; pairwise_all: all pairs; pmrl: PMRL's "
        "leading singular value; confu: ConFu, pairs and fused pairs (three or more modalities); gated_symile: "
        "Symile with per-candidate gates; or a type a plugin registers"
    )
    anchor: str = Field("text", description="anchor modality (gram and triangle also accept 'all'; symile "
                        "anchors every modality in turn; pmrl, confu and gated_symile have no anchor)")
    temperature: float = Field(0.07, gt=0, description="initial temperature (trained)")
    learn_temperature: bool = True
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="None: the loss's default")
    pairwise_weight: float | None = Field(
        None, ge=0, description="weight of a pairwise InfoNCE term added to the GRAM loss (to the anchor; all "
        "pairs for anchor 'all'). The volume cannot tell a vector from its negative, so GRAM alone may align "
        "a modality pointing away from the others; this term fixes the sign that cosine retrieval and "
        "zero-shot rely on. None = off"
    )
    pairwise_warmup: int | None = Field(
        None, ge=1, description="steps over which the pairwise term's weight falls linearly from pairwise_weight "
        "(default 1) to zero: GRAM trains from scratch without a permanent pairwise term. None = off"
    )
    cosine_weight: float | None = Field(
        None, ge=0, description="gram: cosine-regularised volume logits, -(volume - w x sum of the anchor's cosine "
        "similarities with the others) / t. None = off"
    )
    negatives: Literal["n", "n_squared"] = Field(
        "n", description="symile: negatives per row from one shuffle of each modality (n) or from every "
        "combination of rows (n_squared: B^m logits per row, small batches only)"
    )
    singular_temperature: float = Field(
        0.05, gt=0, description="pmrl: the fixed temperature of the softmax over each tuple's singular values (the "
        "run's temperature is its contrastive regulariser's)"
    )
    fused_weight: float = Field(
        0.5, ge=0, le=1, description="confu: weight of the fused terms (a fused pair against the remaining "
        "modality); the pairwise terms weigh 1 - fused_weight"
    )
    fusion_hidden: int = Field(512, ge=1, le=MAX_WIDTH, description="confu: hidden width of each pair's fusion network")
    gate_dim: int = Field(256, ge=1, le=MAX_WIDTH,
                          description="gated_symile: width of the gate's query and key projections")
    gate_null: bool = Field(True, description="gated_symile: the gate's NULL option (trust none of the query's "
                            "vectors for a candidate)")
    local: bool = Field(
        False, description="under torchrun: each process computes its own rows' terms against the global batch "
        "(open_clip's local loss); same gradients, logits per process linear (not quadratic) in the processes"
    )
    dam_weight: float | None = Field(None, ge=0, description="weight of data-anchor matching; None = off")
    dam_hidden: int = Field(256, ge=1, description="hidden width of the DAM head")


class DataConfig(Section):
    """Manifests and loading."""

    train: Path = Field(
        description="training manifest (JSONL or CSV), or shards written by `gramx shards`: their folder or a "
        "pattern such as shards/{000000..000099}.tar"
    )
    val: Path | None = Field(None, description="validation manifest for periodic evaluation")
    batch_size: int = Field(32, ge=2, description="global batch size (split across processes)")
    workers: int = Field(0, ge=0, description="DataLoader worker processes per training process")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="a bad row or file: stop (raise) or leave it out and report it (skip)"
    )
    shuffle: bool = True
    drop_last: bool = Field(True, description="leave out the last incomplete batch of each epoch")


class OptimConfig(Section):
    """Optimisation: AdamW with linear warm-up and a cosine schedule."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0, description="applied to weight matrices only")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; None = off")
    skip_nonfinite: int = Field(
        0, ge=0, description="optimizer steps in a row whose loss or gradient is not finite (NaN, inf) to skip, "
        "leaving the weights as they were, before the run stops with an error; 0 = stop at the first"
    )
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step")
    amp: Literal["auto", "bf16", "fp16", "none"] = Field(
        "auto", description="autocast dtype; auto = bf16 on CUDA, none on CPU"
    )
    epochs: int | None = Field(1, ge=1, description="passes over the training manifest")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    seed: int = 0


class EvalConfig(Section):
    """Periodic validation on ``data.val``."""

    every: int | None = Field(None, ge=1, description="validate every N optimizer steps; None = each epoch end")
    metrics: list[Literal["retrieval", "nway", "zeroshot"]] = Field(default_factory=lambda: ["retrieval", "nway"])
    classes: Path | None = Field(None, description="class names for zero-shot, line i = label i")
    template: str = Field("{}", description="zero-shot prompt template")
    batch_size: int = Field(64, ge=1)


class OutputConfig(Section):
    """Where the run writes, and how often it checkpoints."""

    dir: Path = Field(Path("runs/gramx"), description="run folder")
    checkpoint_every: int | None = Field(None, ge=1, description="checkpoint every N steps (and each epoch end)")
    keep_checkpoints: int = Field(2, ge=1)
    resume: Literal["off", "latest", "required"] = Field(
        "off", description="off: start a new run (a folder holding checkpoints is an error); latest: continue from "
        "the newest checkpoint, or start fresh when there is none (a scheduler can rerun the same command); "
        "required: continue, an error when there is no checkpoint (what --resume does)"
    )


class LoggingConfig(Section):
    """Progress bars, the JSONL metrics log and TensorBoard."""

    every: int = Field(10, ge=1, description="log training metrics every N steps")
    progress: bool = Field(True, description="progress reports: a bar on a terminal, a line per interval in logs")
    tensorboard: bool = True


class RunConfig(Section):
    """A complete training run."""

    modalities: dict[str, RunModality] = Field(description="modality name -> options and head")
    dim: int = Field(256, ge=2, le=MAX_WIDTH, description="dimension of the shared embedding space (extend add: "
                     "the base model's when left out)")
    init: Path | None = Field(
        None, description="a gramx model directory whose weights start the run (fine-tuning; everything "
        "trains): its modalities, their options and heads, and dim must be the run's. None = from scratch"
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (auto = cuda when available)")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: dict[str, RunModality]) -> dict[str, RunModality]:
        if len(value) < 2:
            raise ValueError(f"a run needs at least two modalities, got {sorted(value) or 'none'}")
        return value

    @model_validator(mode="after")
    def _check_loss(self) -> RunConfig:
        names = sorted(self.modalities)
        kind = LOSS_TYPES.get(self.loss.type)  # types from plugins are checked once plugins are loaded
        if kind is not None and kind.check is not None:
            kind.check(self.loss, names)
        if self.loss.dam_weight and self.loss.anchor not in names:
            raise ValueError(f"DAM needs a modality as loss.anchor, got {self.loss.anchor!r}")
        return self


# --------------------------------------------------------------------------- loading


def _validate_plugin_options(config: RunConfig, base: str | Path) -> None:
    kind = loss_type(config.loss.type)
    if kind.check is not None and config.loss.type not in LOSS_TYPES:
        try:
            kind.check(config.loss, sorted(config.modalities))
        except ValueError as exc:
            raise ConfigError(f"invalid config: loss: {exc}", hint=REFERENCE_HINT) from None
    for name, entry in config.modalities.items():
        modality = get_modality(name)
        entry._plugin_config = validate(
            modality.config, entry.options, "invalid config", ("modalities", name, "options"),
            hint=f"the options of {name!r} are defined by its plugin; {REFERENCE_HINT}",
        )
        resolve_paths(entry._plugin_config, base)
        entry.options = entry._plugin_config.model_dump(mode="json")


def _run_path_kind(parts: list[str]) -> PathKind:
    """The path kind of a run file's key; ``modalities.NAME.options.KEY`` asks the plugin's config class."""
    if len(parts) > 3 and parts[0] == "modalities" and parts[2] == "options" and parts[1] in available_modalities():
        return path_kind(get_modality(parts[1]).config, parts[3:])
    return path_kind(RunConfig, parts)


def parse_config(data: Any, base: str | Path = ".", plugins: bool = True) -> RunConfig:
    """Validate a config mapping; relative input paths resolve against ``base``.

    ``plugins=True`` also validates each modality's options with its plugin's config class
    (the plugin must be installed).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a run config must be a mapping of sections, got {type(data).__name__}")
    config = validate(RunConfig, data, "invalid config", hint=REFERENCE_HINT)
    resolve_paths(config, base)
    if plugins:
        _validate_plugin_options(config, base)
    return config


def load_config(path: str | Path, overrides: list[str] | None = None, plugins: bool = True) -> RunConfig:
    """Read, override and validate a run file (paths: see the module docstring)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping of sections")
    apply_overrides(data, overrides or [], _run_path_kind)
    try:
        return parse_config(data, Path(path).parent, plugins=plugins)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", exc.hint) from None


def config_schema() -> dict:
    """JSON schema of a run config, with the options of each installed modality filled in."""
    schema = RunConfig.model_json_schema()
    modalities = available_modalities()
    if modalities:
        props = {}
        for name, modality in modalities.items():
            entry = RunModality.model_json_schema()
            entry.pop("$defs", None)
            entry["properties"]["options"] = modality.config.model_json_schema()
            entry["properties"]["head"] = {"$ref": "#/$defs/HeadConfig"}
            entry["description"] = modality.description or entry.get("description", "")
            props[name] = entry
        schema["properties"]["modalities"]["properties"] = props
    return schema
