"""Grow a trained space without retraining it.

1. :func:`add_modalities` — add modalities to a frozen model with paired data: every
   existing encoder, head and projector is frozen (and kept in eval mode), only the new
   modalities train, against tuples of the existing ones (GRAM volume) or pairwise to an
   anchor, as the run file's ``loss`` says. Existing embeddings stay bit-identical.
2. :func:`bridge_spaces` — bridge a separately trained leaf space B into a base space A
   through a modality they share, using only unpaired pools (Ex-MCR, see
   :mod:`gramx.extend.bridge`). B's other modalities become searchable against all of A's.

Both write an ordinary model directory whose ``config.json`` records its lineage.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import torch
from pydantic import Field

from gramx.files.atomic import check_output
from gramx.extend.bridge import BridgePools, fit_projector, pseudo_tuples
from gramx.model.heads import Projector
from gramx.files.validation import MAX_DEPTH, MAX_WIDTH
from gramx.train.config import REFERENCE_HINT, RunConfig
from gramx.files.config_files import apply_overrides, path_kind, read_yaml, resolve_paths
from gramx.runtime.distributed import resolve_device
from gramx.embed.embedding import embed_manifest
from gramx.errors import ConfigError, GramxError
from gramx.model.model import GramxModel, load_model
from gramx.model.directory import MODEL_DIR, read_model_config
from gramx.model.model import saved_plugin
from gramx.model.schema import SavedModality
from gramx.train.loop import train
from gramx.files.validation import Section, validate
from gramx.version import __version__

__all__ = ["grow_model", "add_modalities", "BridgeConfig", "load_bridge_config", "bridge_spaces"]


def _freeze(model: GramxModel, names: list[str]) -> None:
    for group in (model.encoders, model.heads, model.bridges):
        for name in names:
            if name in group:
                group[name].requires_grad_(False)


def grow_model(base_dir: str | Path, run: RunConfig) -> GramxModel:
    """The base model plus ``run``'s new modalities, with every base part frozen.

    Modalities the base model already has keep the base model's options and weights; the
    run file lists them only so that the loss trains the new ones against them.
    """
    base = load_model(base_dir)
    if run.dim != base.dim:
        raise ConfigError(f"the run's dim is {run.dim} but the base model's space has {base.dim} dimensions",
                          hint=f"set dim: {base.dim}")
    tuned = sorted(n for n, entry in run.modalities.items() if n in base.names and entry.lora is not None)
    if tuned:
        raise ConfigError(f"extend add keeps the base model's modalities frozen: {', '.join(tuned)} cannot get LoRA "
                          "adapters here", hint="give lora to the new modalities only, or train the adapters with "
                          "`gramx train` (gramx_hf.tower_options gives an imported space's options)")
    new = sorted(n for n in run.modalities if n not in base.names)
    if not new:
        raise ConfigError(f"the run adds no modality: the base model already has {', '.join(base.names)}")
    config = base.config.model_copy(deep=True)
    config.gramx_version = __version__
    config.score = run.loss_type.score  # the grown space is scored as the run trains it
    for name in new:
        entry = run.modalities[name]
        config.modalities[name] = SavedModality(
            plugin=saved_plugin(name), config=entry.plugin_config.model_dump(mode="json"), head=entry.head
        )
    config.lineage.append({
        "operation": "add", "base": str(Path(base_dir).resolve()),
        "frozen": base.names, "added": new, "loss": run.loss.type,
    })
    plugin_configs = {**base.modality_configs, **{n: run.modalities[n].plugin_config for n in new}}
    model = GramxModel(config, plugin_configs)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    stray = [k for k in missing if k.split(".")[1] not in new] + list(unexpected)
    if stray:
        raise GramxError(f"the base model's weights do not fit the grown model: {stray[:5]}")
    _freeze(model, base.names)
    return model


def add_modalities(base_dir: str | Path, run: RunConfig, resume: bool | str | None = None, device: str | None = None,
                   overwrite: bool = False) -> Path:
    """Train ``run``'s new modalities against the frozen base model; returns the model directory.

    A run file without ``dim`` takes the base model's. ``resume`` and ``overwrite`` are
    :func:`gramx.train.loop.train`'s.
    """
    if "dim" not in run.model_fields_set:
        run = run.model_copy(update={"dim": read_model_config(base_dir).dim})
    return train(run, resume=resume, device=device, build_model=partial(grow_model, base_dir), overwrite=overwrite)


class ProjectorConfig(Section):
    """The projector mapping the leaf space into the base space."""

    hidden: int = Field(512, ge=1, le=MAX_WIDTH, description="width of the residual MLP blocks")
    depth: int = Field(2, ge=0, le=MAX_DEPTH, description="number of residual blocks")


class BridgeConfig(Section):
    """A bridge run: project leaf space B into base space A through a shared modality."""

    base: Path = Field(description="model directory of the base space A")
    leaf: Path = Field(description="model directory of the leaf space B")
    shared: str = Field("text", description="the modality both spaces have")
    pools: dict[str, Path] = Field(
        description="modality -> manifest whose column of that modality is its unpaired pool; needs the shared "
        "modality and each of the leaf's other modalities (the base's others are optional but help)"
    )
    tau: float = Field(0.01, gt=0, description="softmax temperature of the memory aggregation")
    noise: float = Field(0.03, ge=0, description="Gaussian noise on the centric inputs")
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature of the projector's training")
    intra_weight: float = Field(0.1, ge=0, description="weight of the intra-space alignment term")
    seed: int = 0
    output: Path = Field(Path("runs/bridge/model"), description="where the bridged model is written")
    device: str = "auto"
    progress: bool = True


def load_bridge_config(path: str | Path, overrides: list[str] | None = None) -> BridgeConfig:
    """Read a bridge YAML file with ``a.b=c`` overrides.

    Relative paths (``base``, ``leaf``, ``output``, the pools) resolve against the file's
    folder, those given with ``--set`` against the working folder.
    """
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides or [], lambda parts: path_kind(BridgeConfig, parts))
    config = validate(BridgeConfig, data, f"{path}: invalid bridge config", hint=REFERENCE_HINT)
    resolve_paths(config, path.parent)
    return config


def _pool(model: GramxModel, manifest: Path, name: str, progress: bool) -> torch.Tensor:
    emb = embed_manifest(model, manifest, modalities=[name], progress=progress)
    feats = emb.feats[name][emb.masks[name]]
    if feats.shape[0] == 0:
        raise GramxError(f"{manifest}: no row has a {name!r} value for the {name} pool")
    return feats


def bridge_spaces(config: BridgeConfig, overwrite: bool = False) -> Path:
    """Learn a projector from B's space into A's on unpaired pools; write the joined model.

    A model directory at ``config.output`` is replaced; anything else only with ``overwrite``.
    """
    check_output(config.output, MODEL_DIR, overwrite)  # before any work
    device = resolve_device(config.device)
    base, leaf = load_model(config.base, device=device), load_model(config.leaf, device=device)
    shared = config.shared
    for model, role in ((base, "base"), (leaf, "leaf")):
        if shared not in model.names:
            raise ConfigError(f"the {role} model has no {shared!r} modality; it has {', '.join(model.names)}")
    added = [n for n in leaf.names if n != shared]
    clash = sorted(set(added) & set(base.names))
    if clash:
        raise ConfigError(f"both spaces have modality {clash[0]!r}; a bridge adds the leaf's modalities the base lacks")
    needed = [shared, *added]
    missing = [m for m in needed if m not in config.pools]
    if missing:
        raise ConfigError(f"pools: missing a pool for {missing}", hint="pools need the shared and the leaf's modalities")

    progress = config.progress
    pools = BridgePools(
        shared_a=_pool(base, config.pools[shared], shared, progress),
        shared_b=_pool(leaf, config.pools[shared], shared, progress),
        a_pools={m: _pool(base, p, m, progress) for m, p in config.pools.items() if m in base.names and m != shared},
        b_pools={m: _pool(leaf, config.pools[m], m, progress) for m in added},
    )
    generator = torch.Generator().manual_seed(config.seed)
    tuples = pseudo_tuples(pools, shared, tau=config.tau, noise=config.noise, generator=generator)
    torch.manual_seed(config.seed)
    projector = Projector(leaf.dim, base.dim, config.projector.hidden, config.projector.depth)
    losses = fit_projector(tuples, projector, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                           temperature=config.temperature, intra_weight=config.intra_weight, seed=config.seed,
                           progress=progress)

    joined = base.config.model_copy(deep=True)
    for name in added:
        spec = copy.deepcopy(leaf.config.modalities[name])
        spec.bridge = projector.config()
        joined.modalities[name] = spec
    joined.lineage.append({
        "operation": "bridge", "base": str(config.base), "leaf": str(config.leaf), "shared": shared,
        "added": added, "pseudo_tuples": len(tuples), "steps": config.steps, "final_loss": losses[-1],
    })
    model = GramxModel(joined, {**base.modality_configs, **{n: leaf.modality_configs[n] for n in added}})
    state = {k: v.cpu() for k, v in base.state_dict().items()}
    for name in added:
        for part in ("encoders", "heads"):
            for key, value in getattr(leaf, part)[name].state_dict().items():
                state[f"{part}.{name}.{key}"] = value.cpu()
        for key, value in projector.state_dict().items():
            state[f"bridges.{name}.{key}"] = value
    model.load_state_dict(state, strict=True)
    return model.save_pretrained(config.output, training={**joined.training, "bridge": config.model_dump(mode="json")},
                                 overwrite=overwrite)
