"""The trainer: ``train(config) -> model directory``.

Library first: the CLI only parses arguments and calls :func:`train`. A run folder holds::

    run.yaml             the resolved configuration
    metrics.jsonl        one JSON record per logged step / validation
    tensorboard/         TensorBoard event files
    checkpoints/step-N/  a model directory (config.json + model.safetensors) plus the loss,
                         optimizer, scheduler and RNG state (safetensors + state.json)
    model/               the final model (see gramx.model)

Checkpoints are written atomically and hold everything needed to continue exactly:
``train(config, resume=True)`` restores the weights, optimizer, scheduler, every RNG and
the position in the epoch (the sampler is seeded per epoch and the consumed batches are
skipped), so a run killed at any point ends with the same weights as one never stopped.
Under torchrun the loss sees the global batch (:mod:`gramx.distributed`) and only rank 0
writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from gramx import distributed as gdist
from gramx.config import RunConfig
from gramx.data import (
    Collator,
    DataError,
    ErrorLog,
    ManifestDataset,
    cache_key,
    check_errors,
    encode_unique,
    load_unique,
    read_manifest,
    to_device,
)
from gramx.errors import GramxError
from gramx.losses import DataAnchorMatching, GramLoss, PairwiseInfoNCE, Temperature
from gramx.model import GramxModel, state_for_saving, atomic_directory

__all__ = ["train", "Objective", "build_objective", "Trainer", "latest_checkpoint", "FeatureCache"]

log = logging.getLogger("gramx.train")

_STEP_DIR = re.compile(r"^step-(\d+)$")


# --------------------------------------------------------------------------- objective


class Objective(nn.Module):
    """The contrastive loss (with its trained temperature) plus optional extra terms, summed by weight.

    ``extras`` maps a term's name (``pairwise``, ``dam``) to ``(module, weight)``; each term is
    logged by name.
    """

    def __init__(self, contrastive: nn.Module, extras: dict[str, tuple[nn.Module, float]] | None = None):
        super().__init__()
        self.contrastive = contrastive
        self.extras = nn.ModuleDict({name: module for name, (module, _) in (extras or {}).items()})
        self.weights = {name: weight for name, (_, weight) in (extras or {}).items()}

    def forward(self, feats, masks) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {"contrastive": self.contrastive(feats, masks)}
        total = parts["contrastive"]
        for name, term in self.extras.items():
            parts[name] = term(feats, masks)
            total = total + self.weights[name] * parts[name]
        return total, parts

    @property
    def temperature(self) -> float:
        return float(self.contrastive.temperature().detach())


def build_objective(config: RunConfig) -> Objective:
    """The loss described by ``config.loss`` (the temperature is a trained parameter)."""
    cfg = config.loss
    temperature = Temperature(cfg.temperature, learnable=cfg.learn_temperature)
    extra = {} if cfg.label_smoothing is None else {"label_smoothing": cfg.label_smoothing}
    if cfg.type == "gram":
        loss: nn.Module = GramLoss(anchor=cfg.anchor, temperature=temperature, **extra)
    elif cfg.type == "pairwise":
        loss = PairwiseInfoNCE(anchor=cfg.anchor, temperature=temperature, **extra)
    else:
        loss = PairwiseInfoNCE(anchor=None, temperature=temperature, **extra)
    extras = {}
    if cfg.pairwise_weight:
        anchor = None if cfg.anchor == "all" else cfg.anchor
        extras["pairwise"] = (PairwiseInfoNCE(anchor=anchor, temperature=cfg.temperature), cfg.pairwise_weight)
    if cfg.dam_weight:
        dam = DataAnchorMatching(sorted(config.modalities), config.dim, anchor=cfg.anchor, hidden=cfg.dam_hidden)
        extras["dam"] = (dam, cfg.dam_weight)
    return Objective(loss, extras)


def describe_loss(config: RunConfig) -> str:
    cfg = config.loss
    text = {"gram": f"the GRAM volume loss (anchor {cfg.anchor})",
            "pairwise": f"pairwise InfoNCE (anchor {cfg.anchor})",
            "pairwise_all": "pairwise InfoNCE over all pairs"}[cfg.type]
    if cfg.pairwise_weight:
        text += f" + {cfg.pairwise_weight} x pairwise InfoNCE"
    return text + (f" + {cfg.dam_weight} x DAM" if cfg.dam_weight else "")


# --------------------------------------------------------------------------- feature cache


class FeatureCache:
    """Encoder features of frozen modalities, computed once per distinct manifest value."""

    def __init__(self):
        self.index: dict[str, dict[Any, int]] = {}
        self.tables: dict[str, torch.Tensor] = {}
        self.failed: dict[str, dict[Any, str]] = {}

    @torch.no_grad()
    def build(self, model: GramxModel, name: str, values: list, batch_size: int, workers: int,
              device: torch.device) -> None:
        modality, cfg = model.modalities[name], model.modality_configs[name]
        model.encoders[name].eval()
        self.index[name], self.tables[name], self.failed[name] = encode_unique(
            values, modality, cfg, lambda batch: model.encode(name, batch).float(),
            batch_size=batch_size, workers=workers, device=device,
        )

    def lookup(self, inputs: dict) -> dict[str, torch.Tensor]:
        out = {}
        for name, table in self.tables.items():
            values = inputs.get(name)
            if values is None:
                continue
            idx = torch.tensor([self.index[name][cache_key(v)] for v in values], dtype=torch.long,
                               device=table.device)
            out[name] = table.index_select(0, idx)
        return out


class _CachedDataset(ManifestDataset):
    """A manifest dataset that passes cached / preloaded modalities through as values and
    turns the values that failed to load into row errors."""

    def __init__(self, manifest, modalities, passthrough, failed: dict[str, dict]):
        super().__init__(manifest, modalities, passthrough=passthrough)
        self.failed = failed

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if item["error"] is None:
            row = self.manifest.rows[index]
            for name, failed in self.failed.items():
                value = item["values"].get(name)
                if value is not None and cache_key(value) in failed:
                    message = f"{self.manifest.path.name} line {row.line} ({name}): {failed[cache_key(value)]}"
                    return {"index": index, "values": {}, "error": (row.line, message)}
        return item


# --------------------------------------------------------------------------- sampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded per epoch) that can skip the samples already consumed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        it = super().__iter__()
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


# --------------------------------------------------------------------------- RNG + checkpoints


def _rng_state(device: torch.device) -> tuple[dict, dict[str, torch.Tensor]]:
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


def _set_rng_state(meta: dict, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
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


def _optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {
            key: tensors[f"{pid}.{key}"] if spec.get("tensor") else spec["value"] for key, spec in entry.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or ``None``."""
    found = _checkpoints(Path(run_dir) / "checkpoints")
    return found[-1][1] if found else None


# --------------------------------------------------------------------------- trainer


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise GramxError("optim.amp=fp16 needs a CUDA device", hint="use bf16 or none on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _lr_lambda(cfg, total_steps: int):
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """One training run; use :func:`train`."""

    def __init__(self, config: RunConfig, ctx: gdist.DistContext, resume: bool = False,
                 build_model: Callable[[RunConfig], GramxModel] = GramxModel.from_run_config):
        self.config = config
        self.build_model = build_model
        self.ctx = ctx
        self.device = ctx.device
        self.resume = resume
        self.out = config.output.dir
        self.ckpt_dir = self.out / "checkpoints"
        self.model_dir = self.out / "model"
        self.errors = ErrorLog()
        self.val_report: dict | None = None
        self.writer = None

    # ------------------------------------------------------------------ setup

    def _check_output(self) -> None:
        if self.resume:
            return
        if latest_checkpoint(self.out) is not None or (self.model_dir / "config.json").exists():
            raise GramxError(
                f"{self.out} already holds a run",
                hint="continue it with --resume, or set output.dir (e.g. --set output.dir=runs/new)",
            )

    def setup(self) -> None:
        cfg = self.config
        self._check_output()
        world = self.ctx.world_size
        if cfg.data.batch_size % world:
            raise GramxError(f"data.batch_size {cfg.data.batch_size} is not divisible by {world} processes")
        self.local_batch = cfg.data.batch_size // world
        torch.manual_seed(cfg.optim.seed)
        random.seed(cfg.optim.seed)
        np.random.seed(cfg.optim.seed)
        self.model = self.build_model(cfg).to(self.device)
        self.objective = build_objective(cfg).to(self.device)
        # training randomness (dropout, augmentation) differs per process
        torch.manual_seed(cfg.optim.seed + 1_000_003 * self.ctx.rank)
        random.seed(cfg.optim.seed + self.ctx.rank)
        np.random.seed(cfg.optim.seed + self.ctx.rank)

        self.manifest = read_manifest(cfg.data.train)
        if not self.manifest.rows:
            raise DataError(f"{self.manifest.path}: the manifest has no rows")
        unused = sorted(set(self.manifest.columns) - set(cfg.modalities))
        if unused and self.ctx.is_main:
            log.warning("manifest columns not used by this run: %s", ", ".join(unused))
        mods = {n: (self.model.modalities[n], self.model.modality_configs[n]) for n in self.model.names}
        self.cache = FeatureCache()
        preloaded: dict[str, dict] = {}
        failed: dict[str, dict] = {}
        probe = ManifestDataset(self.manifest, mods)
        for name in self.model.names:
            entry = cfg.modalities[name]
            values = [probe.value(r, name) for r in self.manifest.rows if r.values.get(name) is not None]
            if entry.cache and self.model.frozen(name):
                self.cache.build(self.model, name, values, cfg.eval.batch_size, cfg.data.workers, self.device)
                failed[name] = self.cache.failed[name]
            elif entry.preload:
                preloaded[name], failed[name] = load_unique(values, *mods[name], workers=cfg.data.workers)
            else:
                continue
            if cfg.data.on_error == "raise" and failed[name]:
                key, problem = next(iter(failed[name].items()))
                line = next(r.line for r in self.manifest.rows
                            if r.values.get(name) is not None and cache_key(probe.value(r, name)) == key)
                raise DataError(f"{self.manifest.path.name} line {line} ({name}): {problem}",
                                hint="fix or remove the row, or set data.on_error=skip")
        self.dataset = _CachedDataset(self.manifest, mods, set(self.cache.tables) | set(preloaded), failed)
        self.collate = Collator(mods, passthrough=self.cache.tables.keys(), preloaded=preloaded)
        self.sampler = ResumableSampler(
            self.dataset, num_replicas=world, rank=self.ctx.rank, shuffle=cfg.data.shuffle,
            seed=cfg.optim.seed, drop_last=world > 1,
        )
        per_rank = len(self.sampler)
        micro = per_rank // self.local_batch if cfg.data.drop_last else math.ceil(per_rank / self.local_batch)
        self.steps_per_epoch = micro // cfg.optim.accumulate
        if self.steps_per_epoch == 0:
            raise GramxError(
                f"an epoch has no full optimizer step: {len(self.manifest)} tuples, batch size "
                f"{cfg.data.batch_size}, accumulate {cfg.optim.accumulate}",
                hint="lower data.batch_size or optim.accumulate",
            )
        self.micro_per_epoch = self.steps_per_epoch * cfg.optim.accumulate
        self.total_steps = cfg.optim.max_steps or cfg.optim.epochs * self.steps_per_epoch
        if self.ctx.is_main:
            left_out = len(self.manifest) - self.micro_per_epoch * cfg.data.batch_size
            log.info(
                "%d tuples, %d steps/epoch of %d tuples (%d left out per epoch, reshuffled each epoch), %d steps",
                len(self.manifest), self.steps_per_epoch, cfg.data.batch_size * cfg.optim.accumulate,
                max(0, left_out), self.total_steps,
            )

        self.amp_dtype = _amp_dtype(cfg.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.optimizer = torch.optim.AdamW(
            _param_groups([self.model, self.objective], cfg.optim.weight_decay),
            lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg.optim, self.total_steps))
        self.ddp = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        self.step, self.epoch, self.micro = 0, 0, 0
        if self.resume:
            self._load_latest()

    # ------------------------------------------------------------------ loop

    def loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.micro * self.local_batch
        return DataLoader(
            self.dataset,
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=self.config.data.workers,
            collate_fn=self.collate,
            pin_memory=self.device.type == "cuda",
            drop_last=self.config.data.drop_last,
            generator=torch.Generator().manual_seed(self.config.optim.seed * 7919 + self.epoch),
        )

    def forward_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float], int]:
        """Loss of one micro-batch on the global batch, scaled for DDP's gradient average."""
        batch = to_device(batch, self.device, non_blocking=self.device.type == "cuda")
        cached = self.cache.lookup(batch["inputs"])
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                    else contextlib.nullcontext())
        with autocast:
            feats = self.ddp(batch["inputs"], batch["masks"], cached)
        feats = {k: v.float() for k, v in feats.items()}
        return compute_loss(self.objective, feats, batch["masks"], self.ctx,
                            seed=(self.config.optim.seed, self.step, self.micro))

    def run(self) -> Path:
        cfg = self.config
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            self._open_logs()
        bar = None
        if self.ctx.is_main and cfg.logging.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self.model.train()
        acc = cfg.optim.accumulate
        window = {"loss": 0.0, "n": 0, "samples": 0, "t": time.perf_counter(), "parts": {}}
        while self.step < self.total_steps:
            for batch in self.loader():
                check_errors(batch, cfg.data.on_error, self.errors)
                last_micro = (self.micro + 1) % acc == 0
                sync = contextlib.nullcontext()
                if self.ctx.distributed and not last_micro:
                    sync = self.ddp.no_sync()
                with sync:
                    loss, parts, _ = self.forward_loss(batch)
                    self._backward(loss * self.ctx.world_size / acc)
                self.micro += 1
                window["loss"] += float(loss.detach())
                window["n"] += 1
                window["samples"] += int(batch["index"].numel())
                for k, v in parts.items():
                    window["parts"][k] = window["parts"].get(k, 0.0) + v
                if not last_micro:
                    continue
                self._optimizer_step()
                self.step += 1
                end_of_epoch = self.micro >= self.micro_per_epoch
                if self.step % cfg.logging.every == 0 or self.step == self.total_steps:
                    self._log_train(window, bar)
                if bar is not None:
                    bar.update(1)
                done = self.step >= self.total_steps
                if cfg.data.val is not None and (
                    (cfg.eval.every and self.step % cfg.eval.every == 0)
                    or (cfg.eval.every is None and end_of_epoch)
                    or done
                ):
                    self.validate()
                if end_of_epoch:
                    self.epoch, self.micro = self.epoch + 1, 0
                every = cfg.output.checkpoint_every
                if (every and self.step % every == 0) or end_of_epoch or done:
                    self.save_checkpoint()
                if done or end_of_epoch:
                    break
            else:  # the loader ran out before the epoch's last step (nothing left to skip)
                self.epoch, self.micro = self.epoch + 1, 0
        if bar is not None:
            bar.close()
        return self.finish()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> None:
        gdist.average_gradients(self.objective.parameters(), self.ctx.world_size)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # ------------------------------------------------------------------ logging + eval

    def _open_logs(self) -> None:
        self.metrics_file = self.out / "metrics.jsonl"
        if self.resume and self.metrics_file.exists():  # drop records after the checkpoint
            kept = [line for line in self.metrics_file.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
            self.metrics_file.write_text("".join(k + "\n" for k in kept))
        if self.config.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1 if self.resume else None)

    def _record(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        with self.metrics_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _log_train(self, window: dict, bar) -> None:
        elapsed = max(1e-9, time.perf_counter() - window["t"])
        n = max(1, window["n"])
        rows = gdist.sum_scalar(window["samples"], self.device)
        record = {
            "step": self.step, "epoch": self.epoch, "loss": window["loss"] / n,
            **{k: v / n for k, v in window["parts"].items()},
            "lr": self.scheduler.get_last_lr()[0], "temperature": self.objective.temperature,
            "samples_per_s": rows / elapsed,
        }
        window.update(loss=0.0, n=0, samples=0, t=time.perf_counter(), parts={})
        if not self.ctx.is_main:
            return
        self._record(record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{key}", value, self.step)
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", t=f"{record['temperature']:.3f}",
                            rate=f"{record['samples_per_s']:.0f}/s")

    def validate(self) -> dict | None:
        """Evaluate on ``data.val`` (rank 0); logs and returns the report."""
        from gramx.evaluate import report_from_embeddings

        cfg = self.config
        report = None
        if self.ctx.is_main:
            val_errors = ErrorLog()
            emb = self.model.embed_manifest(cfg.data.val, batch_size=cfg.eval.batch_size, workers=cfg.data.workers,
                                            on_error=cfg.data.on_error, error_log=val_errors)
            report = report_from_embeddings(emb, model=self.model, classes=cfg.eval.classes,
                                            template=cfg.eval.template, parts=cfg.eval.metrics)
            if val_errors.count:
                log.warning("validation: %s", val_errors.summary())
            self.model.train()
            self.val_report = report
            self._record({"step": self.step, "epoch": self.epoch, "val": report})
            if self.writer is not None:
                for kind in ("retrieval", "nway"):
                    for key, metrics in report[kind].items():
                        for name in ("R@1", "R@5", "mAP"):
                            self.writer.add_scalar(f"val/{kind}/{key}/{name}", metrics[name], self.step)
                for key, acc in report["zeroshot"].items():
                    self.writer.add_scalar(f"val/zeroshot/{key}", acc, self.step)
            log.info("step %d: %s", self.step, summarize(report))
        gdist.barrier()
        return report

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (rank 0), keeping the newest few."""
        rng_meta, rng_tensors = _rng_state(self.device)
        everyone = gdist.all_gather_object((rng_meta, {k: v.cpu() for k, v in rng_tensors.items()},
                                            self.errors.count, self.errors.examples, sorted(self.errors.seen)))
        if not self.ctx.is_main:
            return None
        path = self.ckpt_dir / f"step-{self.step:08d}"
        opt_tensors, opt_meta = _optimizer_to_safe(self.optimizer.state_dict())
        rng = {f"{k}.{rank}": v.contiguous() for rank, (_, t, *_) in enumerate(everyone) for k, v in t.items()}
        state = {
            "step": self.step, "epoch": self.epoch, "micro": self.micro, "world_size": self.ctx.world_size,
            "optimizer": opt_meta, "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": [meta for meta, *_ in everyone],
            "errors": [{"count": c, "examples": ex, "seen": seen} for _, _, c, ex, seen in everyone],
            "val": self.val_report,
        }
        with atomic_directory(path) as tmp:  # also a model directory that gramx.load_model reads
            (tmp / "config.json").write_text(self.model.config.model_dump_json(indent=2) + "\n")
            save_file(state_for_saving(self.model), str(tmp / "model.safetensors"))
            save_file(state_for_saving(self.objective), str(tmp / "objective.safetensors"))
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            save_file(rng, str(tmp / "rng.safetensors"))
            (tmp / "state.json").write_text(json.dumps(state))
        for _, old in _checkpoints(self.ckpt_dir)[: -self.config.output.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def _load_latest(self) -> None:
        path = latest_checkpoint(self.out)
        if path is None:
            raise GramxError(f"nothing to resume: {self.ckpt_dir} has no checkpoint",
                             hint="start the run without --resume")
        state = json.loads((path / "state.json").read_text())
        if state["world_size"] != self.ctx.world_size:
            raise GramxError(
                f"{path} was written by {state['world_size']} processes, this run has {self.ctx.world_size}",
                hint="resume with the same number of processes",
            )
        self.model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(self.device)), strict=True)
        self.objective.load_state_dict(
            load_file(str(path / "objective.safetensors"), device=str(self.device)), strict=True
        )
        opt = _optimizer_from_safe(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
        self.optimizer.load_state_dict(opt)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        rank = self.ctx.rank
        rng = load_file(str(path / "rng.safetensors"))
        _set_rng_state(state["rng"][rank], {k.split(".")[0]: v for k, v in rng.items()
                                            if k.endswith(f".{rank}")}, self.device)
        errors = state["errors"][rank]
        self.errors.count, self.errors.examples, self.errors.seen = errors["count"], errors["examples"], set(errors["seen"])
        self.step, self.epoch, self.micro = state["step"], state["epoch"], state["micro"]
        self.val_report = state.get("val")
        if self.ctx.is_main:
            log.info("resumed from %s (step %d, epoch %d)", path, self.step, self.epoch)

    # ------------------------------------------------------------------ end

    def finish(self) -> Path:
        cfg = self.config
        counts = gdist.all_gather_object((self.errors.count, self.errors.examples))
        total = sum(c for c, _ in counts)
        if self.ctx.is_main:
            if total:
                examples = [e for _, ex in counts for e in ex][: self.errors.keep]
                more = f" (and {total - len(examples)} more)" if total > len(examples) else ""
                log.warning("skipped %d bad training rows: %s%s", total, " | ".join(examples), more)
            training = {
                "train_manifest": str(cfg.data.train), "train_tuples": len(self.manifest),
                "skipped_rows": total, "val_manifest": str(cfg.data.val) if cfg.data.val else None,
                "loss": describe_loss(cfg), "temperature": round(self.objective.temperature, 5),
                "steps": self.step, "batch_size": cfg.data.batch_size * cfg.optim.accumulate,
                "lr": cfg.optim.lr, "seed": cfg.optim.seed, "processes": self.ctx.world_size,
            }
            self.model.save_pretrained(self.model_dir, training=training, metrics=self.val_report or {})
            self._record({"step": self.step, "done": True, "model": str(self.model_dir), "skipped_rows": total})
            if self.writer is not None:
                self.writer.close()
        gdist.barrier()
        return self.model_dir


def compute_loss(objective: Objective, feats: dict, masks: dict, ctx: gdist.DistContext,
                 seed: tuple[int, ...] = (0,)) -> tuple[torch.Tensor, dict[str, float], int]:
    """The objective on the global batch: ``(loss, parts, global rows)``.

    Features and masks are gathered from every process (gradients flow to the local rows).
    The loss's own randomness (DAM's negative sampling) is seeded from ``seed`` so that every
    process computes the same global loss and a resumed run draws the same samples.
    """
    feats, masks = gdist.gather_features(feats, masks)
    rows = next(iter(feats.values())).shape[0]
    device = next(iter(feats.values())).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda"):
        s = hash(seed) & 0x7FFF_FFFF_FFFF
        torch.default_generator.manual_seed(s)
        if device.type == "cuda":
            torch.cuda.manual_seed(s)
        try:
            loss, parts = objective(feats, masks)
        except ValueError:  # no tuple in this batch can take part (e.g. every row skipped)
            loss = sum(f.sum() for f in feats.values()) * 0.0
            parts = {}
    return loss, {k: float(v.detach()) for k, v in parts.items()}, rows


def summarize(report: dict) -> str:
    """A one-line digest of an evaluation report: mean R@1 per kind and zero-shot accuracy."""
    out = []
    for kind in ("retrieval", "nway"):
        values = [m["R@1"] for m in report.get(kind, {}).values()]
        if values:
            out.append(f"{kind} mean R@1 {sum(values) / len(values):.1f}")
    for key, acc in report.get("zeroshot", {}).items():
        out.append(f"zero-shot {key} {acc:.1f}%")
    return ", ".join(out) or "no metrics"


def train(config: RunConfig, resume: bool = False, device: str | None = None,
          build_model: Callable[[RunConfig], GramxModel] = GramxModel.from_run_config) -> Path:
    """Train a model as ``config`` describes; returns the final model directory.

    ``resume=True`` continues from the newest checkpoint in ``config.output.dir``.
    ``device`` overrides ``config.device``. Under torchrun every process calls this.
    ``build_model`` makes the initial model (``gramx.extend`` passes one that grows a
    trained model instead of starting from scratch).
    """
    if device is not None:
        config = config.model_copy(update={"device": device})
    started = gdist.dist.is_available() and gdist.dist.is_initialized()
    ctx = gdist.init_distributed(config.device)
    try:
        trainer = Trainer(config, ctx, resume=resume, build_model=build_model)
        trainer.setup()
        return trainer.run()
    finally:
        if not started:
            gdist.cleanup()
