"""The training loop: ``train(config) -> model directory``.

Library first: the CLI only parses arguments and calls :func:`train`. A run folder holds::

    run.yaml             the resolved configuration
    metrics.jsonl        one JSON record per logged step / validation (gramx.train.run_log)
    tensorboard/         TensorBoard event files
    checkpoints/step-N/  a model directory plus the state to resume from (gramx.train.checkpoint)
    model/               the final model directory (gramx.model.directory)

``train(config, resume="latest")`` (``output.resume``) restores the newest checkpoint:
weights, optimizer, scheduler, every RNG and the position in the epoch (an epoch's
micro-batches are fixed in advance and each row's augmentation is seeded by the row, see
:mod:`gramx.train.training_data`), so a run killed at any point ends with the same weights as one
never stopped. Under torchrun the loss sees the global batch
(:meth:`gramx.train.objective.Objective.global_loss`), BatchNorm layers normalise over it
(:mod:`gramx.train.batch_norm`) and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from gramx.runtime import distributed as gdist
from gramx.files.atomic import check_output, remove
from gramx.train.batch_norm import agree_on_sync, use_global_batch_norm
from gramx.train.checkpoint import (
    Plan,
    TrainingParts,
    latest_checkpoint,
    prune_checkpoints,
    restore_checkpoint,
    restoring,
    resume_from,
    rng_state,
    write_checkpoint,
)
from gramx.train.config import RunConfig, build_model
from gramx.data.loading import ErrorLog, check_errors, item_errors, to_device
from gramx.train.divergence import DivergenceGuard
from gramx.errors import GramxError
from gramx.evaluate.report import evaluate, summarize
from gramx.train.objective import build_objective, describe_loss
from gramx.model.model import GramxModel
from gramx.train.optim import Precision, build_optimizer, build_scheduler
from gramx.runtime.progress import progress
from gramx.train.run_log import RUN, RunLog, TrainWindow
from gramx.train.training_data import open_training_data, read_run_files

__all__ = ["train", "Trainer", "latest_checkpoint"]

log = logging.getLogger("gramx.train")


class Trainer:
    """One training run; use :func:`train`."""

    def __init__(self, config: RunConfig, ctx: gdist.DistContext, resume: str = "off",
                 build_model: Callable[[RunConfig], GramxModel] = build_model, overwrite: bool = False):
        self.config = config
        self.build_model = build_model
        self.ctx = ctx
        self.device = ctx.device
        self.overwrite = overwrite
        self.out = config.output.dir
        self.ckpt_dir = self.out / "checkpoints"
        self.model_dir = self.out / "model"
        self.checkpoint = resume_from(self.out, resume)  # None: a new run
        self.resume = self.checkpoint is not None
        self.errors = ErrorLog()
        self.skipped_terms: Counter = Counter()  # batches in which a loss term had nothing to contrast
        self.local_norm: Counter = Counter()  # micro-batches in which a modality's batch statistics were local
        self.val_report: dict | None = None

    # ------------------------------------------------------------------ setup

    def _check_output(self) -> None:
        """Before any work: a new run needs an output folder that is free, or a finished run to replace."""
        if self.resume:
            return
        holds_run = latest_checkpoint(self.out) is not None or (self.model_dir / "config.json").exists()
        if holds_run and not self.overwrite:
            raise GramxError(
                f"{self.out} already holds a run",
                hint="continue it with --resume, start it again with --overwrite, or set output.dir "
                "(e.g. --set output.dir=runs/new)",
            )
        check_output(self.out, RUN, self.overwrite)

    def _seed(self, offset: int = 0) -> None:
        seed = self.config.optim.seed
        torch.manual_seed(seed + 1_000_003 * offset)
        random.seed(seed + offset)
        np.random.seed(seed + offset)

    def setup(self) -> None:
        cfg = self.config
        self._check_output()
        world = self.ctx.world_size
        if cfg.data.batch_size % world:
            raise GramxError(f"data.batch_size {cfg.data.batch_size} is not divisible by {world} processes")
        self.local_batch = cfg.data.batch_size // world
        self.rows = read_run_files(cfg, warn=self.ctx.is_main)
        self._seed()  # the same initial weights on every process
        self.model = self.build_model(cfg).to(self.device)
        self.objective = build_objective(cfg.loss, cfg.loss_type, list(cfg.modalities), cfg.dim).to(self.device)
        self._seed(self.ctx.rank)  # training randomness (dropout, augmentation) differs per process

        self.data, self.cache = open_training_data(self.rows, self.model, cfg, self.ctx)
        self.steps_per_epoch = self.data.plan(cfg.optim.accumulate)
        self.micro_per_epoch = self.data.micro_per_epoch
        self.total_steps = cfg.optim.max_steps or cfg.optim.epochs * self.steps_per_epoch
        if self.ctx.is_main:
            log.info("%d tuples, %d steps/epoch of %d tuples (%d left out per epoch, reshuffled each epoch), %d steps",
                     len(self.rows), self.steps_per_epoch, cfg.data.batch_size * cfg.optim.accumulate,
                     max(0, len(self.rows) - self.micro_per_epoch * self.local_batch * world), self.total_steps)

        self.precision = Precision(cfg.optim.amp, self.device)
        self.ddp = self.model
        if self.ctx.distributed:
            self._wrap_ddp()
        optimizer = build_optimizer([self.model, self.objective], cfg.optim)
        self.parts = TrainingParts(self.model, self.objective, optimizer,
                                   build_scheduler(optimizer, cfg.optim, self.total_steps), self.precision.scaler)
        self.guard = DivergenceGuard(cfg.optim, self.out, {"model": self.model, "objective": self.objective}, self.ctx,
                                     check_grads=self.precision.scaler is None)  # fp16: the scaler skips overflows
        self.step, self.epoch, self.micro = 0, 0, 0
        if self.resume:
            self._restore()

    def _wrap_ddp(self) -> None:
        """Global batch statistics in every BatchNorm, then DDP; it searches for unused parameters only
        when a micro-batch may lack a trainable modality (rows without it, or rows skipped as bad);
        otherwise the graph is static (parameters an encoder never uses are found once)."""
        self.global_norm = use_global_batch_norm(self.model) > 0
        trainable = [n for n in self.model.names if any(
            p.requires_grad for part in (self.model.encoders[n], self.model.heads[n]) for p in part.parameters())]
        self.varying = self.config.data.on_error == "skip" or not all(self.data.complete(n) for n in trainable)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=self.varying,
                                           static_graph=not self.varying)

    # ------------------------------------------------------------------ loop

    def forward_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float], int]:
        """Loss of one micro-batch on the global batch: ``(loss, parts, global rows)``."""
        batch = to_device(batch, self.device, non_blocking=self.device.type == "cuda")
        cached = self.cache.lookup(batch["inputs"])
        if self.ctx.distributed and self.global_norm and self.varying:
            self.local_norm.update(agree_on_sync(self.model.encoders, batch["masks"]))
        with self.precision.autocast():
            feats = self.ddp(batch["inputs"], batch["masks"], cached)
        feats = {k: v.float() for k, v in feats.items()}
        return self.objective.global_loss(feats, batch["masks"], seed=(self.config.optim.seed, self.step, self.micro),
                                          step=self.step, local=self.config.loss.local)

    def run(self) -> Path:
        """Train until ``total_steps``, validating and checkpointing on schedule; returns the model directory."""
        cfg = self.config
        if self.ctx.is_main:
            if not self.resume and (self.out.exists() or self.out.is_symlink()):
                if not self.out.is_dir() or any(self.out.iterdir()):
                    log.warning("gramx: replacing %s with a new %s", self.out, RUN.name)
                remove(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        self.log = RunLog(self.out, enabled=self.ctx.is_main, tensorboard=cfg.logging.tensorboard,
                          resume_step=self.step if self.resume else None)
        bar = None
        if self.ctx.is_main and cfg.logging.progress:
            bar = progress(total=self.total_steps, initial=self.step, desc="train", unit="step")
        self.model.train()
        acc = cfg.optim.accumulate
        window = TrainWindow()
        taking: list[tuple] = []  # the micro-batches of this step, for the window once the step is taken
        while self.step < self.total_steps:
            for batch in self.data.loader(self.epoch, self.micro):
                check_errors(batch, cfg.data.on_error, self.errors)
                last_micro = (self.micro + 1) % acc == 0
                # accumulate without synchronising, except in the first and last micro-batch of a step: a
                # static DDP graph fails unless its first backward synchronises; every step doing so keeps
                # a resumed run bit-identical to one never stopped
                accumulating = self.ctx.distributed and not last_micro and self.micro % acc
                with self.ddp.no_sync() if accumulating else contextlib.nullcontext():
                    loss, parts, _ = self.forward_loss(batch)
                    self.precision.backward(loss * self.ctx.world_size / acc)
                self.micro += 1
                missed = set(self.objective.active_terms(self.step)) - set(parts)
                self.skipped_terms.update(missed)
                taking.append((float(loss.detach()), parts, int(batch["index"].numel()), missed))
                if not last_micro:
                    continue
                if self._optimizer_step(taking):
                    for micro_batch in taking:
                        window.add(*micro_batch)
                taking = []
                self.step += 1
                end_of_epoch = self.micro >= self.micro_per_epoch
                if self.step % cfg.logging.every == 0 or self.step == self.total_steps:
                    self._log_train(window, bar)
                    window = TrainWindow()
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
                    self._check_left_over()
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

    def _check_left_over(self) -> None:
        """Load the rows this epoch left over, only to report the bad ones (see gramx.train.training_data)."""
        items = self.data.load(self.epoch, self.data.left_over(self.epoch))
        check_errors(item_errors(items), self.config.data.on_error, self.errors)

    def _optimizer_step(self, micro_batches: list[tuple]) -> bool:
        """Take the step, or skip it (``False``) when its loss or gradient is not finite (gramx.train.divergence)."""
        gdist.average_gradients(self.objective.parameters(), self.ctx.world_size, local=self.config.loss.local)
        optimizer = self.parts.optimizer
        params = [p for g in optimizer.param_groups for p in g["params"]]
        norm = self.precision.unscale(optimizer, params)
        take = self.guard.take_step(self.step + 1, [(loss, parts) for loss, parts, *_ in micro_batches], norm)
        self.precision.step(optimizer, params, self.config.optim.grad_clip, norm, skip=not take)
        optimizer.zero_grad(set_to_none=True)
        if take:
            self.parts.scheduler.step()
        return take

    # ------------------------------------------------------------------ logging + eval

    def _log_train(self, window: TrainWindow, bar) -> None:
        elapsed = max(1e-9, time.perf_counter() - window.started)
        rows = gdist.sum_scalar(window.samples, self.device)
        record = {
            "step": self.step, "epoch": self.epoch, "loss": window.loss / window.batches if window.batches else None,
            **{k: v / window.computed[k] for k, v in window.parts.items()},
            "lr": self.parts.scheduler.get_last_lr()[0], "temperature": self.objective.temperature,
            "samples_per_s": rows / elapsed,
        }
        if window.missed:
            record["batches_without"] = dict(window.missed)  # term -> batches in which it had nothing to contrast
        record.update(self.guard.counts())
        self.log.record(record)
        self.log.scalars("train", {k: v for k, v in record.items() if isinstance(v, float)}, self.step)
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", t=f"{record['temperature']:.3f}",
                            rate=f"{record['samples_per_s']:.0f}/s")

    def validate(self) -> dict | None:
        """Evaluate on ``data.val`` (rank 0); logs and returns the report."""
        cfg = self.config
        report = None
        if self.ctx.is_main:
            val_errors = ErrorLog()
            report = evaluate(self.model, cfg.data.val, classes=cfg.eval.classes, template=cfg.eval.template,
                              batch_size=cfg.eval.batch_size, workers=cfg.data.workers, on_error=cfg.data.on_error,
                              parts=cfg.eval.metrics, error_log=val_errors)
            if val_errors.count:
                log.warning("validation: %s", val_errors.summary())
            self.model.train()
            self.val_report = report
            self.log.record({"step": self.step, "epoch": self.epoch, "val": report})
            for kind in ("retrieval", "nway"):
                for key, metrics in report[kind].items():
                    self.log.scalars(f"val/{kind}/{key}", {n: metrics[n] for n in ("R@1", "R@5", "mAP")}, self.step)
            self.log.scalars("val/zeroshot", report["zeroshot"], self.step)
            log.info("step %d: %s", self.step, summarize(report))
        gdist.barrier()
        return report

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (rank 0), keeping the newest few."""
        self.guard.check_weights(self.step)
        meta, tensors = rng_state(self.device)
        everyone = gdist.all_gather_object(((meta, {k: v.cpu() for k, v in tensors.items()}),
                                            self.errors.count, self.errors.examples, sorted(self.errors.seen)))
        if not self.ctx.is_main:
            return None
        progress = {
            "step": self.step, "epoch": self.epoch, "micro": self.micro, "world_size": self.ctx.world_size,
            "errors": [{"count": c, "examples": ex, "seen": seen} for _, c, ex, seen in everyone],
            "skipped_terms": dict(self.skipped_terms), "local_norm": dict(self.local_norm), "val": self.val_report,
            "nonfinite": self.guard.state_dict(),
        }
        path = write_checkpoint(self.ckpt_dir / f"step-{self.step:08d}", self.parts, progress,
                                [rng for rng, *_ in everyone])
        prune_checkpoints(self.ckpt_dir, self.config.output.keep_checkpoints)
        return path

    def _restore(self) -> None:
        path = self.checkpoint
        plan = Plan(self.total_steps, self.steps_per_epoch, self.config.optim.accumulate, self.ctx.world_size)
        state = restore_checkpoint(path, self.parts, plan, self.ctx.rank, self.device)
        with restoring(path / "state.json"):  # an edited entry is an error naming the file
            mine = state["errors"][self.ctx.rank]
            self.errors.count, self.errors.examples, self.errors.seen = mine["count"], mine["examples"], set(mine["seen"])
            self.skipped_terms = Counter(state.get("skipped_terms", {}))
            self.local_norm = Counter(state.get("local_norm", {}))
            self.val_report = state.get("val")
            self.guard.load_state_dict(state.get("nonfinite", {"skipped": 0, "in_row": 0}))
        self.step, self.epoch, self.micro = state["step"], state["epoch"], state["micro"]
        if self.ctx.is_main:
            log.info("resumed from %s (step %d, epoch %d)", path, self.step, self.epoch)

    # ------------------------------------------------------------------ end

    def finish(self) -> Path:
        """Write the final model directory (rank 0) and report what was left out."""
        cfg = self.config
        self.guard.check_weights(self.step)
        counts = gdist.all_gather_object((self.errors.count, self.errors.examples))
        total = sum(c for c, _ in counts)
        if self.ctx.is_main:
            if total:
                examples = [e for _, ex in counts for e in ex][: self.errors.keep]
                more = f" (and {total - len(examples)} more)" if total > len(examples) else ""
                log.warning("skipped %d bad training rows: %s%s", total, " | ".join(examples), more)
            for term, batches in sorted(self.skipped_terms.items()):
                log.warning("the %s term had nothing to contrast in %d batches (they trained without it)",
                            term, batches)
            for name, batches in sorted(self.local_norm.items()):
                log.warning("%s was missing from every row of some processes in %d micro-batches: its BatchNorm "
                            "statistics were those of each process's own rows there", name, batches)
            training = {
                "train_manifest": str(cfg.data.train), "train_tuples": len(self.rows),
                "skipped_rows": total, "val_manifest": str(cfg.data.val) if cfg.data.val else None,
                "loss": describe_loss(cfg.loss, cfg.loss_type), "temperature": round(self.objective.temperature, 5),
                "steps": self.step, "batch_size": cfg.data.batch_size * cfg.optim.accumulate,
                "lr": cfg.optim.lr, "seed": cfg.optim.seed, "processes": self.ctx.world_size,
            }
            if self.skipped_terms:
                training["batches_without"] = dict(self.skipped_terms)
            training.update(self.guard.counts())
            self.model.save_pretrained(self.model_dir, training=training, metrics=self.val_report or {})
            self.log.record({"step": self.step, "done": True, "model": str(self.model_dir), "skipped_rows": total})
            self.log.close()
        gdist.barrier()
        return self.model_dir


def train(config: RunConfig, resume: bool | str | None = None, device: str | None = None,
          build_model: Callable[[RunConfig], GramxModel] = build_model,
          overwrite: bool = False) -> Path:
    """Train a model as ``config`` describes; returns the final model directory.

    ``resume`` overrides ``output.resume``: ``"latest"`` continues from the newest checkpoint
    in ``output.dir`` when there is one and starts fresh otherwise; ``"required"`` (or
    ``True``) continues from it and fails when there is none; ``"off"`` (or ``False``) starts
    a new run.
    ``device`` overrides ``config.device``. Under torchrun every process calls this.
    ``build_model`` makes the initial model (``gramx.extend.grow`` passes one that grows a
    trained model instead of starting from scratch). ``output.dir`` must be free, empty or
    an earlier run folder without checkpoints; ``overwrite=True`` replaces whatever is there.
    """
    if device is not None:
        config = config.model_copy(update={"device": device})
    with gdist.processes(config.device) as ctx:
        mode = config.output.resume if resume is None else {True: "required", False: "off"}.get(resume, resume)
        trainer = Trainer(config, ctx, resume=mode, build_model=build_model, overwrite=overwrite)
        trainer.setup()
        return trainer.run()
