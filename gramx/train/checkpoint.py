"""Checkpoints of a training run: a model directory plus everything needed to continue exactly.

::

    checkpoints/step-00000120/
      config.json, model.safetensors, README.md   a model directory (gramx.load_model reads it;
                              frozen pretrained weights by reference, see gramx.model.pretrained)
      objective.safetensors   the loss's own parameters (temperatures, the DAM head)
      optimizer.safetensors   the optimizer's tensors (the rest of its state is in state.json)
      rng.safetensors         every process's torch RNG states
      state.json              step, epoch, position in the epoch, scheduler, gradient scaler,
                              Python and NumPy RNG states, bad-row logs, the last validation

A checkpoint is written atomically, so a run killed at any moment leaves only complete
ones. Nothing is pickled. Resuming checks the state against the run (:class:`Plan`) before
loading anything, and a file that cannot be restored is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gramx.files.atomic import Artefact, atomic_directory
from gramx.errors import GramxError
from gramx.model.directory import WEIGHTS_NAME, state_for_saving

__all__ = ["TrainingParts", "Plan", "CheckpointError", "rng_state", "set_rng_state", "write_checkpoint", "restoring",
           "restore_checkpoint", "list_checkpoints", "latest_checkpoint", "resume_from", "prune_checkpoints"]

STATE_NAME = "state.json"
#: A checkpoint, recognised by its state.json.
CHECKPOINT = Artefact("gramx checkpoint", STATE_NAME, "gramx-checkpoint",
                      ("config.json", "README.md", "*.safetensors", "pretrained/"))
_STEP_DIR = re.compile(r"^step-(\d+)$")
_REQUIRED = ("step", "epoch", "micro", "world_size", "optimizer", "scheduler", "scaler", "rng", "errors")


class CheckpointError(GramxError):
    """A checkpoint cannot be resumed: a file of it is damaged, or its state is no position of the run."""


@dataclass
class Plan:
    """What a checkpoint's state must fit to be resumed: the run's length, epochs and processes."""

    total_steps: int
    steps_per_epoch: int
    accumulate: int
    world_size: int


@dataclass
class TrainingParts:
    """The objects whose state a checkpoint holds."""

    model: Any  # gramx.model.model.GramxModel
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None


def rng_state(device: torch.device) -> tuple[dict, dict[str, torch.Tensor]]:
    """This process's RNG states: ``(Python and NumPy as JSON, torch tensors by device)``."""
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    return meta, tensors


def set_rng_state(meta: dict, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate((meta["python"][0], tuple(meta["python"][1]), meta["python"][2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(tensors["cpu"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)


def _optimizer_to_safe(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {}
    for pid, entry in state["state"].items():
        meta[str(pid)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                meta[str(pid)][key] = {"tensor": True}
            else:
                meta[str(pid)][key] = {"value": value}
    return tensors, {"state": meta, "param_groups": state["param_groups"]}


def _optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict, optimizer: torch.optim.Optimizer) -> dict:
    """The state dict of :func:`_optimizer_to_safe`'s parts; each tensor must be a scalar or its parameter's shape."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {
            key: tensors[f"{pid}.{key}"] if spec.get("tensor") else spec["value"] for key, spec in entry.items()
        }
        for key, value in state[int(pid)].items():
            if torch.is_tensor(value) and value.dim() and value.shape != params[int(pid)].shape:
                raise ValueError(f"{pid}.{key} has shape {tuple(value.shape)}, its parameter "
                                 f"{tuple(params[int(pid)].shape)}")
    return {"state": state, "param_groups": meta["param_groups"]}


def write_checkpoint(path: Path, parts: TrainingParts, progress: dict[str, Any],
                     rng: list[tuple[dict, dict[str, torch.Tensor]]]) -> Path:
    """Write a checkpoint at ``path`` atomically.

    ``progress`` (JSON: step, epoch, ...) goes into ``state.json``; ``rng`` holds every
    process's :func:`rng_state`, in rank order.
    """
    opt_tensors, opt_meta = _optimizer_to_safe(parts.optimizer.state_dict())
    rng_tensors = {f"{k}.{rank}": v.cpu().contiguous() for rank, (_, t) in enumerate(rng) for k, v in t.items()}
    state = {
        "format": CHECKPOINT.format, **progress, "optimizer": opt_meta, "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": [meta for meta, _ in rng],
    }
    with atomic_directory(path, CHECKPOINT) as tmp:
        parts.model.write_files(tmp)
        save_file(state_for_saving(parts.objective), str(tmp / "objective.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        (tmp / STATE_NAME).write_text(json.dumps(state))
    return path


@contextlib.contextmanager
def restoring(file: Path) -> Iterator[None]:
    """A failure inside is a :class:`CheckpointError` naming ``file`` (the original chained, for ``--debug``)."""
    try:
        yield
    except GramxError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{file}: cannot be restored ({type(exc).__name__}: {exc})",
                              hint=f"the checkpoint is damaged: delete {file.parent} to resume from the one before "
                              "it, or start the run again with --overwrite") from exc


def _state_problem(path: Path, state: Any, plan: Plan) -> str | None:
    """Why ``state`` (a checkpoint's state.json) is no position of the run ``plan`` describes, or ``None``."""
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        return f"a state needs the keys {', '.join(_REQUIRED)}"
    step, epoch, micro = (state[k] for k in ("step", "epoch", "micro"))
    if not all(type(v) is int and v >= 0 for v in (step, epoch, micro)):
        return f"step, epoch and micro must be whole numbers >= 0, got {step!r}, {epoch!r}, {micro!r}"
    folder = _STEP_DIR.match(path.name)
    if folder and int(folder.group(1)) != step:
        return f"step {step} is not the step its folder {path.name} names"
    if step > plan.total_steps:
        return f"step {step} is past the end of this run ({plan.total_steps} steps)"
    if micro % plan.accumulate or micro >= plan.steps_per_epoch * plan.accumulate or \
            step != epoch * plan.steps_per_epoch + micro // plan.accumulate:
        return (f"step {step} at epoch {epoch}, micro-batch {micro} is no position of this run ({plan.steps_per_epoch} "
                f"steps per epoch, {plan.accumulate} micro-batches per step): its data, data.batch_size or "
                "optim.accumulate differ from those of the run that wrote it")
    if not all(isinstance(state[k], list) and len(state[k]) == state["world_size"] for k in ("rng", "errors")):
        return f"rng and errors need one entry per process ({state['world_size']})"
    return None


def restore_checkpoint(path: Path, parts: TrainingParts, plan: Plan, rank: int, device: torch.device,
                       ) -> dict[str, Any]:
    """Load a checkpoint into ``parts`` and this process's RNGs; returns its ``state.json``.

    The state must be a position of the run ``plan`` describes, with its number of processes.
    """
    with restoring(path / STATE_NAME):
        state = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    if isinstance(state, dict) and state.get("world_size", plan.world_size) != plan.world_size:
        raise CheckpointError(
            f"{path} was written by {state['world_size']} processes, this run has {plan.world_size}",
            hint="resume with the same number of processes",
        )
    problem = _state_problem(path, state, plan)
    if problem is not None:
        raise CheckpointError(f"{path / STATE_NAME}: {problem}",
                              hint="resume with the run file, data and --set options the run was started with, "
                              "from a checkpoint gramx wrote; or start the run again with --overwrite")
    with restoring(path / WEIGHTS_NAME):
        parts.model.load_weights(path)
    with restoring(path / "objective.safetensors"):
        parts.objective.load_state_dict(load_file(str(path / "objective.safetensors"), device=str(device)), strict=True)
    with restoring(path / "optimizer.safetensors"):
        parts.optimizer.load_state_dict(
            _optimizer_from_safe(load_file(str(path / "optimizer.safetensors")), state["optimizer"], parts.optimizer))
    with restoring(path / STATE_NAME):
        parts.scheduler.load_state_dict(state["scheduler"])
        if parts.scaler is not None and state["scaler"]:
            parts.scaler.load_state_dict(state["scaler"])
    with restoring(path / "rng.safetensors"):
        rng = load_file(str(path / "rng.safetensors"))
        set_rng_state(state["rng"][rank], {k.split(".")[0]: v for k, v in rng.items() if k.endswith(f".{rank}")},
                      device)
    return state


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints in ``folder`` as ``(step, path)``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or ``None``."""
    found = list_checkpoints(Path(run_dir) / "checkpoints")
    return found[-1][1] if found else None


def resume_from(run_dir: str | Path, mode: str) -> Path | None:
    """The checkpoint a run in ``run_dir`` continues from, by ``output.resume`` ``mode``.

    ``"off"``: none (a new run). ``"latest"``: the newest, or none when there is none yet, so
    a scheduler can start and restart the same command. ``"required"``: the newest; an error
    when there is none.
    """
    if mode == "off":
        return None
    path = latest_checkpoint(run_dir)
    if path is None and mode == "required":
        raise GramxError(f"nothing to resume: {Path(run_dir) / 'checkpoints'} has no checkpoint",
                         hint="start the run without --resume, or with --resume latest (starts fresh when "
                         "there is nothing to resume)")
    return path


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints in ``folder``."""
    for _, old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
