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
working folder (see :mod:`gramx.files.config_files`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from gramx.errors import ConfigError
from gramx.files.config_files import PathKind, apply_overrides, path_kind, read_yaml, resolve_paths
from gramx.files.validation import MAX_WIDTH, Section, validate
from gramx.losses.config import LossConfig
from gramx.losses.table import LOSS_TYPES, LossType
from gramx.model.schema import HeadConfig, LoraConfig, ModelConfig, SavedModality
from gramx.model.model import GramxModel, saved_plugin
from gramx.plugins.host import available_modalities, get_modality, loss_type
from gramx.version import __version__

__all__ = [
    "RunModality",
    "DataConfig",
    "OptimConfig",
    "EvalConfig",
    "OutputConfig",
    "LoggingConfig",
    "RunConfig",
    "load_config",
    "parse_config",
    "config_schema",
    "build_model",
]

#: Where every configuration error points.
REFERENCE_HINT = "every key is in the configuration reference: `gramx config reference` (docs/config-reference.md)"

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


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

    _loss_type: LossType | None = PrivateAttr(default=None)

    @property
    def loss_type(self) -> LossType:
        """The :class:`gramx.losses.table.LossType` that ``loss.type`` names (a plugin's once validated with plugins)."""
        kind = self._loss_type or LOSS_TYPES.get(self.loss.type)
        if kind is None:
            raise ConfigError(f"loss.type {self.loss.type!r} is no built-in type, and the run config was not "
                              "validated against the installed plugins")
        return kind

    def as_model_config(self) -> ModelConfig:
        """The model this run trains, as its directory's ``config.json`` will record it.

        The modalities in name order (the order of YAML keys never matters), each with the
        plugin that provides it, and the score of the run's loss type.
        """
        specs = {name: SavedModality(plugin=saved_plugin(name), config=entry.plugin_config.model_dump(mode="json"),
                                     head=entry.head, lora=entry.lora)
                 for name, entry in sorted(self.modalities.items())}
        return ModelConfig(gramx_version=__version__, dim=self.dim, score=self.loss_type.score, modalities=specs)

    def plugin_configs(self) -> dict[str, BaseModel]:
        """Each modality's options as an instance of its plugin's config class."""
        return {name: entry.plugin_config for name, entry in self.modalities.items()}

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
    kind = config._loss_type = loss_type(config.loss.type)
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


def build_model(run: RunConfig) -> GramxModel:
    """A freshly initialised model for a validated run; with ``init``, that model's weights."""
    model = GramxModel(run.as_model_config(), run.plugin_configs())
    if run.init is not None:
        model.start_from(run.init)
    return model
