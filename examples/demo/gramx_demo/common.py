"""Shared helpers of the demo stages: paths, timing, training through the library, metrics, tables."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gramx.embed import embed_manifest, embed_values

__all__ = [
    "EXAMPLES",
    "LOSSES",
    "run_name",
    "default_data_dir",
    "Timings",
    "read_jsonl",
    "write_jsonl",
    "absolute_rows",
    "train_model",
    "Analysis",
    "analyse",
    "format_table",
    "markdown_table",
    "say",
]

#: ``examples/`` of the gramx repository (this package lives in ``examples/demo``).
EXAMPLES = Path(__file__).resolve().parents[2]


#: The objectives every stage compares, in training order: label -> the run file's ``loss`` section.
#: GRAM is trained with its recipe from scratch: every modality anchors in turn and a pairwise
#: term fades out over the first 150 of the digits stage's 230 steps (the volume alone cannot
#: tell a vector from its negative and is flat at the random start; see report.md). Symile is
#: the joint peer.
#: The model whose embeddings of the test split become the index the demo serves.
GRAM_RECIPE = "GRAM + warm-up"
LOSSES = {
    GRAM_RECIPE: {"type": "gram", "anchor": "all", "pairwise_warmup": 150},
    "pairwise": {"type": "pairwise", "anchor": "text"},
    "Symile": {"type": "symile"},
}


def run_name(label: str) -> str:
    """A folder name for a model label: ``"GRAM + warm-up"`` -> ``"gram-warm-up"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def default_data_dir() -> Path:
    """The digits data shipped with the repository (``examples/data/digits``)."""
    return EXAMPLES / "data" / "digits"


def say(message: str = "") -> None:
    print(message, flush=True)


@dataclass
class Timings:
    """Wall-clock and CPU seconds per named step."""

    steps: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.steps[name] = (time.perf_counter() - wall, time.process_time() - cpu)

    def total(self, prefix: str = "") -> tuple[float, float]:
        picked = [v for k, v in self.steps.items() if k.startswith(prefix)]
        return sum(w for w, _ in picked), sum(c for _, c in picked)


# --------------------------------------------------------------------------- manifests


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def absolute_rows(rows: list[dict], root: Path, keys: Sequence[str]) -> list[dict]:
    """Copies of ``rows`` whose relative paths under ``keys`` are made absolute against ``root``."""
    out = []
    for row in rows:
        row = dict(row)
        for key in keys:
            if row.get(key) is not None and not os.path.isabs(row[key]):
                row[key] = str((root / row[key]).resolve())
        out.append(row)
    return out


# --------------------------------------------------------------------------- training


def train_model(config: dict, run_dir: Path, progress: bool = True) -> Path:
    """Validate ``config`` (a run-config mapping), train it with :func:`gramx.train.loop.train` into
    ``run_dir`` (inside the demo's own report folder) and return the model directory."""
    from gramx.train.config import parse_config
    from gramx.train.loop import train

    config = dict(config)
    config["output"] = {**config.get("output", {}), "dir": str(run_dir)}
    config["logging"] = {"every": 5, "progress": progress, "tensorboard": False, **config.get("logging", {})}
    return train(parse_config(config, base="."), device="cpu")


def read_losses(run_dir: Path) -> tuple[list[int], list[float]]:
    """The main contrastive term of the training loss (without weighted extra terms, so every
    model's curve is a cross-entropy over the batch) per logged step, from ``metrics.jsonl``."""
    steps, losses = [], []
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        if "loss" in record and "val" not in record:
            steps.append(record["step"])
            losses.append(record.get("contrastive", record["loss"]))
    return steps, losses


# --------------------------------------------------------------------------- evaluation


@dataclass
class Analysis:
    """Everything the tables and plots need about one trained model on one test manifest."""

    report: dict  # gramx.evaluate.report report: retrieval / nway (volume) / nway_cosine / zeroshot
    positive_volumes: torch.Tensor  # volume of each complete test tuple (anchor with its own tuple)
    negative_volumes: torch.Tensor  # anchor with tuples of other classes
    embeddings: Any  # gramx.embed.embedding.Embeddings
    prompts: torch.Tensor | None  # class-prompt embeddings [C, D]
    names: list[str]


def _label_positives(labels: list, rows: torch.Tensor) -> torch.Tensor:
    ids = torch.tensor([hash(labels[i]) for i in rows.tolist()])
    return ids[:, None] == ids[None, :]


def analyse(model, manifest: str | Path, classes: list[str] | None = None, template: str = "{}",
            anchor: str = "text", progress: bool = False, max_negatives: int = 20000, seed: int = 0) -> Analysis:
    """Embed ``manifest`` once; evaluate it and compute the volumes of matching and other-class tuples."""
    from gramx.evaluate.report import evaluate
    from gramx.scores.volume import volume_matrix

    emb = embed_manifest(model, manifest, progress=progress)
    report = evaluate(model, emb, classes=classes, template=template)
    names = [n for n in emb.feats if bool(emb.masks[n].any())]
    complete = torch.stack([emb.masks[n] for n in names]).all(dim=0).nonzero().squeeze(1)
    pos = neg = torch.zeros(0)
    if complete.numel() and anchor in names and len(names) >= 2:
        others = [n for n in names if n != anchor]
        tuples = torch.stack([emb.feats[o][complete] for o in others], dim=1)
        volumes = volume_matrix(emb.feats[anchor][complete], tuples)
        pos = volumes.diagonal().clone()
        other_class = ~_label_positives(emb.labels, complete)
        neg = volumes[other_class]
        if neg.numel() > max_negatives:
            pick = torch.randperm(neg.numel(), generator=torch.Generator().manual_seed(seed))[:max_negatives]
            neg = neg[pick]
    prompts = None
    if classes and anchor in model.names:
        prompts = embed_values(model, anchor, [template.format(c) for c in classes])
    return Analysis(report, pos, neg, emb, prompts, names)


# --------------------------------------------------------------------------- tables


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
