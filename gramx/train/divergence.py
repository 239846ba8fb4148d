"""The divergence guard: a training step whose loss or gradient is not finite stops the run, or is skipped.

One NaN or infinite loss or gradient poisons every weight at the next optimizer step, and a
model of NaN weights scores every search with NaN. The trainer asks the guard before each
optimizer step: a loss (or one of its terms) or a global gradient norm that is not finite
stops the run with a :class:`DivergedError` naming the step, before the step is taken and
before anything else is written, so the newest checkpoint stays the last good state.
``optim.skip_nonfinite: N`` skips up to N such steps in a row instead (the weights, the
optimizer's moments and the LR schedule stay; the data moves on), as fp16's gradient scaler
does; under fp16 the scaler itself skips gradient overflows, so only the loss is checked.
The weights are checked too before each checkpoint and the final model are written.

Every process gets the same answer (the check is collective), so under torchrun all stop
together and none is left waiting in a collective call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from gramx.runtime import distributed as gdist
from gramx.train.checkpoint import latest_checkpoint
from gramx.train.config import OptimConfig
from gramx.errors import GramxError

__all__ = ["DivergedError", "DivergenceGuard"]

log = logging.getLogger("gramx.train")


class DivergedError(GramxError):
    """A run's loss, gradient or weights stopped being finite; names the step."""


def _loss_problem(losses: Iterable[tuple[float, Mapping[str, float]]]) -> str | None:
    """What is not finite in the ``(loss, {term: value})`` of a step's micro-batches, or ``None``."""
    for loss, parts in losses:
        if not math.isfinite(loss):
            bad = [f"{name} term {value}" for name, value in parts.items() if not math.isfinite(value)]
            return f"the loss is {loss}" + (f" ({', '.join(bad)})" if len(parts) > 1 and bad else "")
    return None


def _first_nonfinite(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> str | None:
    return next((name for name, t in tensors if t is not None and not bool(torch.isfinite(t).all())), None)


def _agree(problem: str | None, device: torch.device) -> str | None:
    """The first process's problem when any process has one, on every process (collective)."""
    if not gdist.sum_scalar(float(problem is not None), device):
        return None
    return next(p for p in gdist.all_gather_object(problem) if p is not None)


class DivergenceGuard:
    """Checks each optimizer step of a run in ``run_dir`` training ``modules`` (name -> module) in process ``ctx``.

    ``check_grads=False`` leaves the gradients to a gradient scaler (fp16).
    """

    def __init__(self, optim: OptimConfig, run_dir: Path, modules: Mapping[str, nn.Module], ctx: gdist.DistContext,
                 check_grads: bool = True):
        self.optim, self.run_dir, self.modules, self.ctx = optim, run_dir, dict(modules), ctx
        self.check_grads = check_grads
        self.skipped = 0  # steps skipped in the whole run
        self.in_row = 0  # steps skipped since the last step taken

    def _named(self, grads: bool) -> Iterable[tuple[str, torch.Tensor | None]]:
        for prefix, module in self.modules.items():
            for name, p in module.named_parameters():
                yield f"{prefix}.{name}", p.grad if grads else p

    def take_step(self, step: int, losses: Iterable[tuple[float, Mapping[str, float]]], grad_norm: torch.Tensor,
                  ) -> bool:
        """Whether optimizer step ``step`` may be taken (``False``: skip it), from the ``(loss, {term: value})`` of
        its micro-batches and its global gradient norm; a :class:`DivergedError` when no more steps may be skipped."""
        problem = _loss_problem(losses)
        if problem is None and self.check_grads and not math.isfinite(float(grad_norm)):
            name = _first_nonfinite(self._named(True))
            problem = f"the gradient norm is {float(grad_norm)}" + (f" (first not finite: {name})" if name else "")
        problem = _agree(problem, self.ctx.device)
        if problem is None:
            self.in_row = 0
            return True
        if self.in_row >= self.optim.skip_nonfinite:
            raise self._stopped(step, problem)
        self.in_row += 1
        self.skipped += 1
        if self.ctx.is_main:
            log.warning("step %d: %s; skipped (%d in a row of at most %d)", step, problem, self.in_row,
                        self.optim.skip_nonfinite)
        return False

    def check_weights(self, step: int) -> None:
        """Raise a :class:`DivergedError` when a weight is not finite after ``step`` (before writing them)."""
        name = _agree(_first_nonfinite(self._named(False)), self.ctx.device)
        if name is not None:
            raise self._stopped(step, f"after it the weight {name} is not finite")

    def _stopped(self, step: int, problem: str) -> DivergedError:
        last = latest_checkpoint(self.run_dir)
        kept = f"its last checkpoint, {last}, stays" if last else "no checkpoint was written before it"
        after = f" after skipping {self.in_row} such steps in a row" if self.in_row else ""
        return DivergedError(
            f"training diverged at step {step}{after}: {problem}; the run stopped without writing a model ({kept})",
            hint=f"a learning rate too high (optim.lr is {self.optim.lr:g}; keep optim.grad_clip on) or a NaN or "
            "infinite value in the data: fix it and start again with --overwrite, or let a few such steps pass with "
            "optim.skip_nonfinite=N")

    def counts(self) -> dict[str, int]:
        """``{"skipped_steps": N}`` once steps were skipped (for metrics.jsonl and the model card), else ``{}``."""
        return {"skipped_steps": self.skipped} if self.skipped else {}

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_row": self.in_row}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.skipped, self.in_row = state["skipped"], state["in_row"]
