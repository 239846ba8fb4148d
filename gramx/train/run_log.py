"""The record a training run keeps: its marker file, ``metrics.jsonl`` and TensorBoard events."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gramx.files.atomic import Artefact
from gramx.version import __version__

__all__ = ["RUN", "RunLog", "TrainWindow"]

#: A run folder, recognised by its gramx-run.json.
RUN = Artefact("gramx run folder", "gramx-run.json", "gramx-run",
               ("run.yaml", "metrics.jsonl", "tensorboard/", "model/", "checkpoints/"))


class RunLog:
    """Appends records to ``OUT/metrics.jsonl`` and scalars to ``OUT/tensorboard/``.

    Only the main process writes (``enabled=False`` elsewhere). ``resume_step`` continues a
    run: records after that step (written before the run was killed) are dropped, so the
    log never holds a step twice.
    """

    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        marker = {"format": RUN.format, "format_version": 1, "gramx_version": __version__}
        (out / RUN.marker).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(k + "\n" for k in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: slow, only when used

            purge = resume_step + 1 if resume_step is not None else None
            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge)

    def record(self, record: Mapping[str, Any]) -> None:
        """Append one JSON record to ``metrics.jsonl``."""
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Log ``values`` to TensorBoard as ``prefix/name``."""
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class TrainWindow:
    """Training figures summed between two log records: loss, terms, batches, samples, time."""

    def __init__(self):
        self.loss, self.batches, self.samples = 0.0, 0, 0
        self.parts: Counter = Counter()
        self.computed: Counter = Counter()  # batches in which each term was computed
        self.missed: Counter = Counter()  # batches in which an active term had nothing to contrast
        self.started = time.perf_counter()

    def add(self, loss: float, parts: dict[str, float], samples: int, missed: set[str]) -> None:
        self.loss += loss
        self.batches += 1
        self.samples += samples
        self.parts.update(parts)
        self.computed.update(parts.keys())
        self.missed.update(missed)
