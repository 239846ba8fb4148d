"""The n-modality model: one plugin encoder + projection head per modality.

Every modality is handled by the same loop: ``encoders[name]`` (built by the modality's
plugin) maps a batch to ``[B, feature_dim]`` and ``heads[name]`` projects that into the
shared, L2-normalised space of dimension ``dim``. A trained model is a directory::

    model/
      config.json        dim, and per modality: plugin (distribution + version), its
                         config, the head options and the encoder's feature size
      model.safetensors  all weights
      README.md          a model card

written atomically by :meth:`GramxModel.save_pretrained` and read by :func:`load_model`,
which rebuilds each encoder through its plugin and loads the weights with ``strict=True``.
Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from gramx.config import HeadConfig, format_validation_error
from gramx.errors import ConfigError, GramxError, PluginError

__all__ = [
    "PluginInfo",
    "ModalitySpec",
    "ModelConfig",
    "ProjectionHead",
    "GramxModel",
    "Embeddings",
    "load_model",
    "atomic_directory",
    "state_for_saving",
    "resolve_device",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT = "gramx-model"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginInfo(_Strict):
    """Which installed plugin provided a modality when the model was built."""

    name: str | None = None
    distribution: str | None = None
    version: str | None = None


class ModalitySpec(_Strict):
    """How to rebuild one modality's encoder and head."""

    plugin: PluginInfo = Field(default_factory=PluginInfo)
    config: dict[str, Any] = Field(default_factory=dict, description="the plugin's config, as JSON")
    head: HeadConfig = Field(default_factory=HeadConfig)
    feature_dim: int | None = None
    bridge: dict[str, int] | None = Field(
        None, description="Projector options (gramx.bridge) mapping this modality from the space it was "
        "trained in into this model's space; None for modalities trained in this space"
    )


class ModelConfig(_Strict):
    """The contents of a model directory's ``config.json``."""

    format: Literal["gramx-model"] = FORMAT
    format_version: Literal[1] = 1
    gramx_version: str = ""
    dim: int = Field(ge=2)
    modalities: dict[str, ModalitySpec]
    training: dict[str, Any] = Field(default_factory=dict, description="what the model was trained on")
    metrics: dict[str, Any] = Field(default_factory=dict, description="the last evaluation report")
    lineage: list[dict[str, Any]] = Field(
        default_factory=list, description="how the model grew: the models it extends and what was added"
    )


class ProjectionHead(nn.Module):
    """Linear map (``hidden=0``) or 2-layer MLP from encoder features to the shared space."""

    def __init__(self, in_dim: int, out_dim: int, cfg: HeadConfig):
        super().__init__()
        if cfg.hidden:
            self.net = nn.Sequential(
                nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, out_dim)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _plugin_info(name: str) -> PluginInfo:
    from gramx.plugins import get_host

    record = get_host().provider(name)
    return PluginInfo(name=record.name, distribution=record.distribution, version=record.version)


def _lookup(name: str, spec: ModalitySpec):
    """The installed modality ``name``; a miss names the distribution to install."""
    from gramx.plugins import get_host

    try:
        modality = get_host().get_modality(name)
    except PluginError as exc:
        dist = spec.plugin.distribution
        if dist:
            version = f"=={spec.plugin.version}" if spec.plugin.version else ""
            raise PluginError(
                f"the model needs modality {name!r} from the plugin distribution {dist!r}, which is not installed",
                hint=f"pip install '{dist}{version}'" + (f" ({exc.hint})" if "failed to load" in (exc.hint or "") else ""),
            ) from None
        raise
    installed = get_host().provider(name)
    if spec.plugin.version and installed.version and installed.version != spec.plugin.version:
        warnings.warn(
            f"modality {name!r}: the model was saved with {spec.plugin.distribution} {spec.plugin.version}, "
            f"installed is {installed.version}",
            stacklevel=3,
        )
    return modality


def _projector(name: str, options: dict[str, int], dim: int) -> nn.Module:
    from gramx.bridge import Projector

    if options.get("dim_out") != dim:
        raise ConfigError(f"modality {name!r}: its bridge maps into {options.get('dim_out')} dims, the model has {dim}")
    return Projector(**options)


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


@dataclass
class Embeddings:
    """Embeddings of a whole manifest: ``feats[name][N, D]`` (zeros where absent), ``masks[name][N]``."""

    ids: list[str]
    labels: list[Any]
    lines: list[int]
    feats: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    values: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.ids)


class GramxModel(nn.Module):
    """Encoders + projection heads into one shared space; see the module docstring."""

    def __init__(self, config: ModelConfig, plugin_configs: Mapping[str, BaseModel] | None = None):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.modalities: dict[str, Any] = {}
        self.modality_configs: dict[str, BaseModel] = {}
        self.encoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.bridges = nn.ModuleDict()
        for name, spec in config.modalities.items():
            modality = _lookup(name, spec)
            cfg = (plugin_configs or {}).get(name)
            if cfg is None:
                try:
                    cfg = modality.config.model_validate(spec.config)
                except pydantic.ValidationError as exc:
                    raise ConfigError(
                        "invalid model config: "
                        + format_validation_error(exc, modality.config, ("modalities", name, "config"))
                    ) from None
            encoder = modality.build_encoder(cfg)
            if not isinstance(encoder, nn.Module):
                raise PluginError(f"modality {name!r}: build_encoder returned {type(encoder).__name__}, not nn.Module")
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
            spec.feature_dim = int(feature_dim)
            self.modalities[name] = modality
            self.modality_configs[name] = cfg
            self.encoders[name] = encoder
            head_dim = config.dim
            if spec.bridge is not None:
                self.bridges[name] = _projector(name, spec.bridge, config.dim)
                head_dim = spec.bridge["dim_in"]
            self.heads[name] = ProjectionHead(int(feature_dim), head_dim, spec.head)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_run_config(cls, run) -> "GramxModel":
        """A freshly initialised model for a validated :class:`gramx.config.RunConfig`."""
        from gramx import __version__

        specs = {
            name: ModalitySpec(
                plugin=_plugin_info(name), config=entry.plugin_config.model_dump(mode="json"), head=entry.head
            )
            for name, entry in sorted(run.modalities.items())  # the order of YAML keys never matters
        }
        config = ModelConfig(gramx_version=__version__, dim=run.dim, modalities=specs)
        return cls(config, {name: entry.plugin_config for name, entry in run.modalities.items()})

    @property
    def names(self) -> list[str]:
        return list(self.encoders)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def frozen(self, name: str) -> bool:
        """Whether ``name``'s encoder has no trainable parameters (its features never change)."""
        return not _has_trainable(self.encoders[name])

    def train(self, mode: bool = True) -> "GramxModel":
        """Like ``nn.Module.train``, but frozen parts (no trainable parameters) stay in eval mode."""
        super().train(mode)
        for part in (*self.encoders.values(), *self.heads.values(), *self.bridges.values()):
            if not _has_trainable(part):
                part.eval()
        return self

    # ------------------------------------------------------------------ embedding

    def encode(self, name: str, batch: Any) -> torch.Tensor:
        """Encoder features ``[B, feature_dim]`` of one modality's collated batch."""
        return self.encoders[name](batch)

    def project(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """Project encoder features into the shared space and L2-normalise (float32).

        A bridged modality is first embedded in the space it was trained in, then mapped
        into this model's space by its projector.
        """
        emb = F.normalize(self.heads[name](features).float(), dim=-1)
        return self.bridges[name](emb) if name in self.bridges else emb

    def embed(self, name: str, batch: Any) -> torch.Tensor:
        """Shared-space embeddings ``[B, dim]`` of one modality's collated batch."""
        if name not in self.encoders:
            raise GramxError(f"the model has no modality {name!r}; it has {', '.join(self.names)}")
        return self.project(name, self.encode(name, batch))

    def forward(
        self,
        inputs: Mapping[str, Any],
        masks: Mapping[str, torch.Tensor],
        cached: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embed a collated tuple batch: ``{name: [B, dim]}`` with zero rows where absent.

        ``inputs[name]`` holds only the present samples (see :class:`gramx.data.Collator`);
        ``cached[name]`` may give their encoder features instead.
        """
        out = {}
        for name in self.encoders:
            mask = masks[name]
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

    @torch.no_grad()
    def embed_values(self, name: str, values: Sequence[Any], batch_size: int = 64, base: str | Path | None = None):
        """Load, collate and embed raw values (texts, paths) of one modality: ``[N, dim]``.

        Relative paths resolve against ``base`` (default: the working directory).
        """
        if name not in self.encoders:
            raise GramxError(f"the model has no modality {name!r}; it has {', '.join(self.names)}")
        modality, cfg = self.modalities[name], self.modality_configs[name]
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, len(values), batch_size):
                chunk = []
                for v in values[start : start + batch_size]:
                    if modality.value_is_path and isinstance(v, str | Path):
                        v = str(Path(base or ".", v).expanduser().resolve())
                    chunk.append(modality.load(v, cfg))
                batch = _to_device(modality.make_batch(chunk, cfg), self.device)
                out.append(self.embed(name, batch).float().cpu())
            return torch.cat(out) if out else torch.zeros(0, self.dim)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def embed_manifest(
        self,
        manifest,
        batch_size: int = 64,
        workers: int = 0,
        on_error: str = "raise",
        modalities: Iterable[str] | None = None,
        error_log=None,
        progress: bool = False,
    ) -> Embeddings:
        """Embed every row of a manifest (a path or :class:`gramx.data.Manifest`) in batches.

        Each distinct value of a modality (a caption repeated over many rows, a file used
        twice) is loaded and encoded once. A row whose value fails to load is an error
        (``on_error="raise"``, naming the line and file) or leaves the result and is recorded
        in ``error_log`` (``"skip"``).
        """
        from gramx.data import DataError, ErrorLog, ManifestDataset, cache_key, encode_unique, read_manifest

        if not hasattr(manifest, "rows"):
            manifest = read_manifest(manifest)
        names = [n for n in (modalities or self.names) if n in self.encoders]
        resolver = ManifestDataset(manifest, {n: (self.modalities[n], self.modality_configs[n]) for n in names})
        rows = manifest.rows
        log = error_log if error_log is not None else ErrorLog()
        bad: dict[int, str] = {}
        feats, masks = {}, {}
        was_training = self.training
        self.eval()
        try:
            steps = names
            if progress:
                from tqdm.auto import tqdm

                steps = tqdm(names, desc="embed", unit="modality", leave=False)
            for name in steps:
                values = [resolver.value(r, name) for r in rows]
                index, table, failed = encode_unique(
                    [v for v in values if v is not None], self.modalities[name], self.modality_configs[name],
                    lambda batch, name=name: self.embed(name, batch), batch_size=batch_size, workers=workers,
                    device=self.device,
                )
                keys = [None if v is None else cache_key(v) for v in values]
                for i, key in enumerate(keys):
                    if key is not None and key in failed and i not in bad:
                        bad[i] = f"{manifest.path.name} line {rows[i].line} ({name}): {failed[key]}"
                if bad and on_error == "raise":
                    raise DataError(bad[min(bad)], hint="fix or remove the row, or skip bad rows (--on-error skip)")
                mask = torch.tensor([k is not None and k in index for k in keys], dtype=torch.bool)
                out = torch.zeros(len(rows), self.dim)
                if mask.any():
                    idx = torch.tensor([index[k] for k, m in zip(keys, mask.tolist()) if m], dtype=torch.long)
                    out[mask] = table.float().cpu()[idx]
                feats[name], masks[name] = out, mask
        finally:
            self.train(was_training)
        log.add((rows[i].line, message) for i, message in sorted(bad.items()))
        keep = torch.tensor([i not in bad for i in range(len(rows))], dtype=torch.bool)
        kept = [r for r, k in zip(rows, keep.tolist()) if k]
        return Embeddings(
            ids=[r.id for r in kept],
            labels=[r.label for r in kept],
            lines=[r.line for r in kept],
            feats={n: f[keep] for n, f in feats.items()},
            masks={n: m[keep] for n, m in masks.items()},
            values={n: [r.values.get(n) for r in kept] for n in names},
        )

    # ------------------------------------------------------------------ saving

    def save_pretrained(
        self,
        path: str | Path,
        training: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        is_main_process: bool = True,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` atomically."""
        path = Path(path)
        if not is_main_process:
            return path
        config = self.config.model_copy(deep=True)
        if training is not None:
            config.training = dict(training)
        if metrics is not None:
            config.metrics = dict(metrics)
        with atomic_directory(path) as tmp:
            (tmp / CONFIG_NAME).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
            save_file(state_for_saving(self), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / CARD_NAME).write_text(model_card(config), encoding="utf-8")
        self.config = config
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> "GramxModel":
        """Rebuild a saved model through its plugins and load its weights (``strict=True``)."""
        path = Path(path)
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise GramxError(f"{path} is not a gramx model directory (no {CONFIG_NAME})",
                             hint="pass the folder written by `gramx train` (e.g. runs/NAME/model)")
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
            config = ModelConfig.model_validate(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{config_file}: invalid JSON ({exc.msg})") from None
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{config_file}: " + format_validation_error(exc, ModelConfig)) from None
        model = cls(config)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise GramxError(f"{path}: missing {WEIGHTS_NAME}")
        state = load_file(str(weights))
        expected = set(model.state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise GramxError(
                f"{weights}: weights do not match the model (missing: {sorted(missing)[:5]}, "
                f"unexpected: {sorted(unexpected)[:5]})",
                hint="was the model saved with another version of a plugin?",
            )
        model.load_state_dict(state, strict=True)
        if device is not None:
            model.to(resolve_device(str(device)))
        return model.eval()


def resolve_device(request: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N``/``cpu`` as given."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(request)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GramxError(f"device {request!r} requested but CUDA is not available", hint="use --device cpu")
    return device


def _to_device(obj: Any, device: torch.device) -> Any:
    from gramx.data import to_device

    return to_device(obj, device, non_blocking=device.type == "cuda")


def state_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, shared storage copied."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


class atomic_directory:
    """Context manager: write into a temporary sibling folder, then move it to ``path``.

    An existing ``path`` is replaced only once the new contents are complete; a crash
    leaves either the old folder or the new one, never a half-written one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        for f in self.tmp.iterdir():  # flush file contents before the rename
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def load_model(path: str | Path, device: str | torch.device | None = None) -> GramxModel:
    """Load a model directory written by :meth:`GramxModel.save_pretrained` (or ``gramx train``)."""
    return GramxModel.from_pretrained(path, device=device)


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def model_card(config: ModelConfig) -> str:
    """A short Markdown model card: modalities, dims, training data and metrics."""
    lines = [
        "---",
        "library_name: gramx",
        "tags: [gramx, multimodal, gram-volume]",
        "---",
        "",
        "# gramx model",
        "",
        f"Aligns {len(config.modalities)} modalities ({', '.join(config.modalities)}) in one "
        f"{config.dim}-dimensional, L2-normalised space trained with "
        f"{config.training.get('loss', 'a contrastive loss')}. Load it with:",
        "",
        "```python",
        "import gramx",
        'model = gramx.load_model("path/to/this/folder")',
        "```",
        "",
        "## Modalities",
        "",
        "| modality | plugin | version | encoder features | head |",
        "|---|---|---|---|---|",
    ]
    for name, spec in config.modalities.items():
        head = f"MLP {spec.head.hidden}" if spec.head.hidden else "linear"
        lines.append(
            f"| {name} | {spec.plugin.distribution or spec.plugin.name or '-'} | {spec.plugin.version or '-'} "
            f"| {spec.feature_dim} | {head} -> {config.dim} |"
        )
    lines += ["", "## Training data", ""]
    if config.training:
        for key, value in config.training.items():
            lines.append(f"- {key}: {value}")
    else:
        lines.append("- not recorded")
    lines += ["", "## Metrics", ""]
    metrics = config.metrics or {}
    table = [(f"{kind}: {key}", m) for kind in ("retrieval", "nway") for key, m in (metrics.get(kind) or {}).items()]
    if table:
        lines += ["| task | R@1 | R@5 | R@10 | MedR | mAP |", "|---|---|---|---|---|---|"]
        for task, m in table:
            lines.append(f"| {task} | " + " | ".join(_fmt(m.get(k)) for k in ("R@1", "R@5", "R@10", "MedR", "mAP")) + " |")
        if metrics.get("tuples"):
            lines.append(f"\nOn {metrics['tuples']} tuples of the validation manifest.")
    for name, acc in (metrics.get("zeroshot") or {}).items():
        lines.append(f"- zero-shot accuracy, {name}: {acc:.2f}%")
    if not table and not metrics.get("zeroshot"):
        lines.append("- not evaluated")
    return "\n".join(lines) + "\n"
