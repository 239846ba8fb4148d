"""The n-modality model: one plugin encoder + projection head per modality, into one space.

Every modality is handled by the same loop: ``encoders[name]`` (built by the modality's
plugin) maps a batch to ``[B, feature_dim]`` and ``heads[name]`` projects that into the
shared, L2-normalised space of dimension ``dim``. A bridged modality (:mod:`gramx.extend.bridge`)
is embedded in the space it was trained in, then mapped by ``bridges[name]``. A modality
with ``lora`` gets low-rank adapters on its encoder's pretrained weights (hook
``gramx_add_lora``). :meth:`GramxModel.save_pretrained` and :func:`load_model` write and
read model directories (:mod:`gramx.model.directory`); frozen pretrained weights are stored by
reference (:mod:`gramx.model.pretrained`). Loading rebuilds each encoder through its plugin and
loads the weights strictly: every key the model has, except those a checked reference covers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from gramx.errors import ConfigError, GramxError, PluginError
from gramx.files.validation import validate
from gramx.model.allocation import AllocationBudget
from gramx.model.directory import (
    CONFIG_NAME,
    fingerprint,
    read_model_config,
    read_weights,
    save_model_dir,
    state_for_saving,
    write_model_files,
)
from gramx.model.heads import ProjectionHead, Projector
from gramx.model.pretrained import PretrainedWeights, plan_save, resolve_refs
from gramx.model.schema import ModelConfig, SavedModality, SavedPlugin
from gramx.plugins.host import get_host
from gramx.plugins.modality import Modality
from gramx.runtime.distributed import resolve_device

__all__ = ["GramxModel", "load_model", "saved_plugin"]


def _lookup(name: str, spec: SavedModality) -> Modality:
    """The installed modality ``name``; a miss names the distribution the model was saved with."""
    host = get_host()
    try:
        modality = host.get_modality(name)
    except PluginError:
        dist = spec.plugin.distribution
        if not dist:
            raise
        version = f"=={spec.plugin.version}" if spec.plugin.version else ""
        hint = f"pip install '{dist}{version}'"
        broken = [r for r in host.records.values() if r.distribution == dist and r.status != "ok"]
        if broken:
            hint += "; it is installed but not working: " + ", ".join(
                r.describe() + (f": {r.error}" if r.error else "") for r in broken)
        raise PluginError(f"the model needs modality {name!r} from the plugin distribution {dist!r}, "
                          "which is not installed or not working", hint=hint) from None
    installed = host.provider(name)
    if spec.plugin.version and installed.version and installed.version != spec.plugin.version:
        warnings.warn(
            f"modality {name!r}: the model was saved with {spec.plugin.distribution} {spec.plugin.version}, "
            f"installed is {installed.version}",
            stacklevel=3,
        )
    return modality


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class GramxModel(nn.Module):
    """Encoders + projection heads into one shared space; see the module docstring.

    ``config`` is not modified: the model keeps its own copy, with each encoder's feature
    size filled in.
    """

    def __init__(self, config: ModelConfig, plugin_configs: Mapping[str, BaseModel] | None = None):
        super().__init__()
        self.config = config = config.model_copy(deep=True)
        self.dim = config.dim
        self.source: Path | None = None  # the model directory it was loaded from or saved to
        self._fingerprints: dict[Path, str] = {}
        self.modalities: dict[str, Modality] = {}
        self.modality_configs: dict[str, BaseModel] = {}
        self.encoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.bridges = nn.ModuleDict()
        self.pretrained: dict[str, PretrainedWeights] = {}
        with AllocationBudget("the model") as budget:  # sizes come from files: never build a giant
            for name, spec in config.modalities.items():
                budget.what = f"modality {name!r}"
                self._add_modality(name, spec, (plugin_configs or {}).get(name))

    def _add_modality(self, name: str, spec: SavedModality, cfg: BaseModel | None) -> None:
        """Build ``name``'s encoder (through its plugin), adapters, bridge and head."""
        modality = _lookup(name, spec)
        if cfg is None:
            cfg = validate(modality.config, spec.config, "invalid model config", ("modalities", name, "config"))
        encoder = modality.build_encoder(cfg)
        if not isinstance(encoder, nn.Module):
            raise PluginError(f"modality {name!r}: build_encoder returned {type(encoder).__name__}, not nn.Module")
        if spec.lora is not None:
            encoder = get_host().add_lora(name, encoder, spec.lora)
        self.pretrained[name] = PretrainedWeights(name, encoder)
        self.pretrained[name].check(spec.pretrained)
        spec.feature_dim = self._feature_dim(name, encoder, spec)
        self.modalities[name] = modality
        self.modality_configs[name] = cfg
        self.encoders[name] = encoder
        head_dim = self.dim
        if spec.bridge is not None:
            if spec.bridge.dim_out != self.dim:
                raise ConfigError(f"modality {name!r}: its bridge maps into {spec.bridge.dim_out} "
                                  f"dims, the model has {self.dim}")
            self.bridges[name] = Projector(**spec.bridge.model_dump())
            head_dim = spec.bridge.dim_in
        self.heads[name] = ProjectionHead(spec.feature_dim, head_dim, spec.head)

    @staticmethod
    def _feature_dim(name: str, encoder: nn.Module, spec: SavedModality) -> int:
        feature_dim = getattr(encoder, "feature_dim", None) or spec.head.in_dim
        if not feature_dim:
            raise PluginError(
                f"modality {name!r}: its encoder has no feature_dim attribute",
                hint=f"set modalities.{name}.head.in_dim to the encoder's output size",
            )
        if spec.feature_dim is not None and spec.feature_dim != feature_dim:
            raise ConfigError(
                f"modality {name!r}: the encoder gives {feature_dim} features but the model was "
                f"saved with {spec.feature_dim}"
            )
        return int(feature_dim)

    # ------------------------------------------------------------------ building

    def start_from(self, path: str | Path) -> None:
        """Take the weights of the saved model at ``path``, which must have this model's structure."""
        def structure(config: ModelConfig) -> dict:
            return config.model_dump(include={"dim", "modalities"},
                                     exclude={"modalities": {"__all__": {"plugin", "pretrained"}}})

        if structure(read_model_config(path)) != structure(self.config):
            raise ConfigError(f"init: the model at {path} is not this run's model (dim, modalities, their options "
                              "and heads must be the same)", hint="copy those sections from its config.json")
        self.load_weights(path)
        self.config.lineage.append({"operation": "init", "from": str(Path(path).resolve())})

    @property
    def names(self) -> list[str]:
        """The model's modalities."""
        return list(self.encoders)

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of :attr:`source` (:func:`gramx.model.directory.fingerprint`), computed once; None unsaved."""
        if self.source is None:
            return None
        if self.source not in self._fingerprints:
            self._fingerprints[self.source] = fingerprint(self.source)
        return self._fingerprints[self.source]

    @property
    def score(self) -> str:
        """The similarity the model was trained with (a key of :data:`gramx.scores.similarity.SCORES`)."""
        return self.config.score

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def frozen(self, name: str) -> bool:
        """Whether ``name``'s encoder has no trainable parameters (its features never change)."""
        return not _has_trainable(self.encoders[name])

    def train(self, mode: bool = True) -> GramxModel:
        """Like ``nn.Module.train``, but frozen parts (no trainable parameters) stay in eval mode."""
        super().train(mode)
        for part in (*self.encoders.values(), *self.heads.values(), *self.bridges.values()):
            if not _has_trainable(part):
                part.eval()
        return self

    # ------------------------------------------------------------------ embedding

    def check_modality(self, name: str) -> None:
        """Raise a clear error when the model has no modality ``name``."""
        if name not in self.encoders:
            raise GramxError(f"the model has no modality {name!r}; it has {', '.join(self.names)}")

    def encode(self, name: str, batch: Any) -> torch.Tensor:
        """Encoder features ``[B, feature_dim]`` of one modality's collated batch."""
        return self.encoders[name](batch)

    def project(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """Project encoder features into the shared space and L2-normalise (float32)."""
        emb = F.normalize(self.heads[name](features).float(), dim=-1)
        return self.bridges[name](emb) if name in self.bridges else emb

    def embed(self, name: str, batch: Any) -> torch.Tensor:
        """Shared-space embeddings ``[B, dim]`` of one modality's collated batch."""
        self.check_modality(name)
        return self.project(name, self.encode(name, batch))

    def forward(
        self,
        inputs: Mapping[str, Any],
        masks: Mapping[str, torch.Tensor],
        cached: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embed a collated tuple batch: ``{name: [B, dim]}`` for the batch's modalities (``masks``' keys).

        Rows where a modality is absent are zeros. ``inputs[name]`` holds only the present
        samples (see :class:`gramx.data.loading.Collator`); ``cached[name]`` may give their
        encoder features instead.
        """
        out = {}
        for name, mask in masks.items():
            size = mask.shape[0]
            present = mask.nonzero().squeeze(1)
            if cached is not None and name in cached:
                emb = self.project(name, cached[name])
            elif inputs.get(name) is not None:
                emb = self.embed(name, inputs[name])
            else:
                out[name] = torch.zeros(size, self.dim, device=mask.device)
                continue
            out[name] = emb.new_zeros(size, self.dim).index_copy(0, present.to(emb.device), emb)
        return out

    # ------------------------------------------------------------------ saving

    def _stored(self, output: Path, self_contained: bool) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
        """What a model directory at ``output`` holds: its config, the weights it stores, the folders it copies."""
        plan = plan_save(self.encoders, self.pretrained,
                         {name: spec.config for name, spec in self.config.modalities.items()}, output, self_contained)
        config = self.config.model_copy(deep=True)
        for name, spec in config.modalities.items():
            spec.config, spec.pretrained = plan.configs[name], plan.refs[name]
        return config, state_for_saving(self, plan.skipped), plan.copies

    def write_files(self, folder: Path) -> None:
        """Write the model's files into an existing folder (a checkpoint), frozen pretrained weights by reference."""
        write_model_files(folder, *self._stored(folder, self_contained=False))

    def save_pretrained(
        self,
        path: str | Path,
        training: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        is_main_process: bool = True,
        overwrite: bool = False,
        self_contained: bool = False,
    ) -> Path:
        """Write the model directory (``config.json``, weights, card) atomically; returns ``path``.

        Frozen pretrained weights are stored by reference to their folder; ``self_contained``
        copies those folders into the directory instead, for sharing (:mod:`gramx.model.pretrained`).
        ``training`` and ``metrics`` replace those records of the config when given. A model
        directory already at ``path`` is replaced; anything else only with ``overwrite``.
        """
        path = Path(path)
        if not is_main_process:
            return path
        updates = {k: dict(v) for k, v in (("training", training), ("metrics", metrics)) if v is not None}
        self.config = self.config.model_copy(update=updates)
        config, state, copies = self._stored(path, self_contained)
        self.source = save_model_dir(path, config, state, copies, overwrite).resolve()
        self._fingerprints.pop(self.source, None)  # new weights there
        return path

    def load_weights(self, path: str | Path, saved: ModelConfig | None = None) -> None:
        """Load the weights of a model directory (or checkpoint) saved from this configuration.

        Every key must be there except the frozen pretrained weights its references cover,
        which the encoders already loaded from the checked folders. The weights of saved
        modalities this model leaves out (see :meth:`from_pretrained`) are not read.
        ``saved``: the directory's ``config.json`` when the caller has read it already.
        """
        saved = (saved or read_model_config(path)).modalities
        referenced = set()
        for name, tracker in self.pretrained.items():
            refs = saved[name].pretrained if name in saved else []
            tracker.check(refs)
            referenced |= {f"encoders.{name}.{key}" for key in tracker.referenced(refs)}
        left_out = tuple(f"{part}.{name}." for name in set(saved) - set(self.modalities)
                         for part in ("encoders", "heads", "bridges"))
        shapes = {key: value.shape for key, value in self.state_dict().items()}
        state = read_weights(path, shapes, device=str(self.device), referenced=referenced,
                             left_out=left_out)
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None,
                        modalities: Sequence[str] | None = None) -> GramxModel:
        """Rebuild a saved model through its plugins and load its weights (see :meth:`load_weights`).

        ``modalities``: build and load only these (their plugins alone need to be installed);
        their embeddings are exactly those of the whole model.
        """
        saved = read_model_config(path)
        config = saved.model_copy(deep=True)
        if modalities is not None:
            config.modalities = {name: config.modalities[name] for name in _known(modalities, config, path)}
        for name, spec in config.modalities.items():
            spec.pretrained, spec.config = resolve_refs(name, spec.pretrained, spec.config, path)
        try:
            model = cls(config)
        except (ConfigError, PluginError) as exc:  # a problem of its config.json, or of what it asks for
            raise type(exc)(f"{Path(path) / CONFIG_NAME}: {exc}", exc.hint) from None
        model.load_weights(path, saved)
        model.source = Path(path).resolve()
        if device is not None:
            model.to(resolve_device(str(device)))
        return model.eval()


def _known(modalities: Sequence[str], config: ModelConfig, path: str | Path) -> list[str]:
    """``modalities`` checked against the saved model's."""
    unknown = [name for name in modalities if name not in config.modalities]
    if unknown or not modalities:
        raise GramxError(f"{path}: the model has no modality {', '.join(map(repr, unknown))}" if unknown
                         else f"{path}: no modality to load", hint=f"its modalities: {', '.join(config.modalities)}")
    return list(dict.fromkeys(modalities))


def load_model(path: str | Path, device: str | torch.device | None = None,
               modalities: Sequence[str] | None = None) -> GramxModel:
    """Load a model directory written by :meth:`GramxModel.save_pretrained` (or ``gramx train``).

    ``modalities``: load only these (see :meth:`GramxModel.from_pretrained`).
    """
    return GramxModel.from_pretrained(path, device=device, modalities=modalities)


def saved_plugin(modality: str) -> SavedPlugin:
    """The installed plugin that provides ``modality``, as a model directory records it."""
    record = get_host().provider(modality)
    return SavedPlugin(name=record.name, distribution=record.distribution, version=record.version)
