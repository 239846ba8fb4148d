"""The digits stage: GRAM (its recipe), pairwise InfoNCE and Symile on spoken digits, sign photos, captions (and
handwritten glyphs when the glyph example plugin is installed)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from gramx_demo import plots
from gramx_demo.common import (
    GRAM_RECIPE,
    LOSSES,
    Analysis,
    Timings,
    absolute_rows,
    analyse,
    format_table,
    read_jsonl,
    read_losses,
    run_name,
    say,
    train_model,
    write_jsonl,
)

__all__ = ["DigitsOptions", "DigitsResult", "run_digits", "run_config"]



@dataclass
class DigitsOptions:
    out: Path
    data: Path
    classes: list[str]
    template: str = "the digit {}"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    quick: bool = False
    glyph: bool | None = None  # None: use it when the plugin is installed
    progress: bool = True
    map_method: str = "tsne"
    final: Path | None = None  # where ``out`` is moved when the demo ends (default: ``out``)


@dataclass
class DigitsResult:
    modalities: list[str]
    train_rows: int
    test_rows: int
    steps: int
    analyses: dict[str, Analysis] = field(default_factory=dict)
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, tuple[list[list], list[str]]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    serve: str = ""  # the command that serves the index of the test split


def glyph_available() -> bool:
    """Whether the glyph example plugin is installed and registered its modality."""
    from gramx.plugins.host import available_modalities

    return importlib.util.find_spec("gramx_glyph") is not None and "glyph" in available_modalities()


def prepare_manifests(opts: DigitsOptions, work: Path, glyph: bool) -> tuple[Path, Path]:
    """Copies of the train/test manifests with absolute paths (a subset with ``quick``), plus
    a ``glyph`` column joined by label when the glyph plugin is used."""
    out = {}
    for split in ("train", "test"):
        rows = absolute_rows(read_jsonl(opts.data / f"{split}.jsonl"), opts.data, ("audio", "image"))
        if opts.quick:
            rows = rows[: 400 if split == "train" else 150]
        path = write_jsonl(work / f"{split}-plain.jsonl", rows)
        if glyph:
            from gramx_glyph.data import add_glyphs

            add_glyphs(path, work / f"{split}.jsonl", split, seed=opts.seed)
            path = work / f"{split}.jsonl"
        out[split] = path
    return out["train"], out["test"]


def run_config(train: Path, loss: dict, opts: DigitsOptions, glyph: bool) -> dict:
    """The run configuration (as a mapping) of one demo model."""
    modalities = {
        # 8 kHz recordings, 0.8 s log-mel windows (32 bands, 20 ms hop): a small, fast CNN input
        "audio": {"options": {"sample_rate": 8000, "duration": 0.8, "n_mels": 32, "window_ms": 32, "hop_ms": 20},
                  "preload": True},
        # 48x48 photos; the random affine/colour jitter runs inside the encoder, so preloading is safe
        "image": {"options": {"size": 48}, "preload": True},
        # frozen MiniLM: its features are computed once per distinct caption; a small MLP head learns
        "text": {"options": {"freeze": True}, "head": {"hidden": 256}},
    }
    if glyph:
        modalities["glyph"] = {"options": {}, "preload": True}
    return {
        "modalities": modalities,
        "dim": 64,
        "loss": dict(loss),
        "data": {"train": str(train), "batch_size": opts.batch_size, "workers": 0},
        "optim": {"lr": opts.lr, "warmup_steps": 20, "epochs": opts.epochs, "seed": opts.seed},
        "output": {"keep_checkpoints": 1},
    }


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def build_tables(result: DigitsResult) -> None:
    """Retrieval, n-way and zero-shot tables (rows + header), for the terminal and report.md."""
    models = list(result.analyses)
    first = result.analyses[models[0]]
    pairs = list(first.report["retrieval"])
    rows = []
    for pair in pairs:
        row = [pair.replace("->", " → ")]
        for m in models:
            metrics = result.analyses[m].report["retrieval"].get(pair, {})
            row += [_fmt(metrics.get("R@1", float("nan"))), _fmt(metrics.get("mAP", float("nan")))]
        rows.append(row)
    header = ["query → candidates"] + [f"{m} {k}" for m in models for k in ("P@1", "mAP")]
    result.tables["retrieval"] = (rows, header)

    rows = []
    for key in first.report["nway"]:
        row = [key.replace("->", " → ")]
        for m in models:
            a = result.analyses[m]
            vol, cos = a.report["nway"].get(key, {}), a.report["nway_cosine"].get(key, {})
            row += [f"{_fmt(vol.get('R@1', float('nan')))} / {_fmt(vol.get('mAP', float('nan')))}",
                    f"{_fmt(cos.get('R@1', float('nan')))} / {_fmt(cos.get('mAP', float('nan')))}"]
        rows.append(row)
    header = ["query → tuple"] + [f"{m} {s} P@1 / mAP" for m in models
                                  for s in (result.analyses[m].report["score"], "cosine-sum")]
    result.tables["nway"] = (rows, header)

    rows = [[name] + [_fmt(result.analyses[m].report["zeroshot"].get(name, float("nan"))) for m in models]
            for name in first.report["zeroshot"]]
    result.tables["zeroshot"] = (rows, ["modality"] + [f"{m} accuracy %" for m in models])


def print_tables(result: DigitsResult) -> None:
    titles = {
        "retrieval": "Class-level retrieval, every modality pair (cosine; a hit = same digit; percent)",
        "nway": "N-way retrieval: one modality against tuples of all the others (percent)",
        "zeroshot": "Zero-shot classification against the ten class prompts (chance = 10%)",
    }
    for key, title in titles.items():
        rows, header = result.tables[key]
        say(f"\n{title}\n{format_table(rows, header)}")


def run_digits(opts: DigitsOptions, timings: Timings) -> DigitsResult:
    """Train every model of ``LOSSES``, evaluate them on the test split, print the tables, draw the figures."""
    work = opts.out / "work" / "digits"
    glyph = glyph_available() if opts.glyph is None else opts.glyph
    with timings("digits: prepare manifests"):
        train, test = prepare_manifests(opts, work, glyph)
    names = ["audio", "image"] + (["glyph"] if glyph else []) + ["text"]
    train_rows, test_rows = len(read_jsonl(train)), len(read_jsonl(test))
    steps_per_epoch = train_rows // opts.batch_size
    result = DigitsResult(names, train_rows, test_rows, steps_per_epoch * opts.epochs)
    say(f"digits: {train_rows} training and {test_rows} test tuples of {', '.join(names)}"
        + ("" if glyph else " (install examples/glyph_plugin to add handwritten glyphs)"))
    from gramx.train.config import parse_config
    from gramx.model.model import load_model
    from gramx.train.objective import describe_loss

    models = {}
    for i, (label, loss) in enumerate(LOSSES.items(), start=1):
        config = run_config(train, loss, opts, glyph)
        result.config = config
        run = parse_config(config, plugins=False)
        say(f"\n[{i}/{len(LOSSES)}] training the {label} model: {result.steps} steps of {opts.batch_size} tuples "
            f"({opts.epochs} epochs), loss = {describe_loss(run.loss, run.loss_type)}")
        run_dir = work / "runs" / run_name(label)
        with timings(f"digits: train {label}"):
            models[label] = train_model(config, run_dir, progress=opts.progress)
        result.curves[label] = read_losses(run_dir)
    say("\nevaluating on the test split ...")
    for label, path in models.items():
        with timings(f"digits: evaluate {label}"):
            model = load_model(path)
            result.analyses[label] = analyse(model, test, classes=opts.classes, template=opts.template,
                                             progress=opts.progress, seed=opts.seed)
        if label == GRAM_RECIPE:
            with timings("digits: index the test split"):
                result.serve = index_test_split(model, result.analyses[label].embeddings, test, opts)
    build_tables(result)
    print_tables(result)
    with timings("digits: figures"):
        figures = opts.out / "figures"
        result.figures["curves"] = plots.training_curves(result.curves, opts.batch_size, figures / "training-curves.png",
                                                         steps_per_epoch=steps_per_epoch)
        result.figures["zeroshot"] = plots.zeroshot_bars(
            {m: a.report["zeroshot"] for m, a in result.analyses.items()}, 100 / len(opts.classes),
            figures / "zeroshot.png")
        tuple_name = "(" + ", ".join(["text"] + [n for n in names if n != "text"]) + ")"
        result.figures["volumes"] = plots.volume_histograms(
            {m: (a.positive_volumes.numpy(), a.negative_volumes.numpy()) for m, a in result.analyses.items()},
            tuple_name, figures / "volume-histograms.png")
        result.figures["map"] = plots.embedding_map(
            {m: _map_panel(a, opts.seed) for m, a in result.analyses.items()}, opts.classes,
            figures / "embedding-map.png", method=opts.map_method, seed=opts.seed)
    return result


def index_test_split(model, embeddings, test: Path, opts: DigitsOptions) -> str:
    """Write the test split's embeddings as an index (``work/digits/index``); returns the command serving it."""
    import shlex

    from gramx.index.writer import IndexWriter

    final = opts.final or opts.out
    moved = lambda path: final / path.resolve().relative_to(opts.out.resolve())  # noqa: E731 - where it ends up
    folder = opts.out / "work" / "digits" / "index"
    with IndexWriter(folder, model, source=moved(test)) as writer:  # the manifest's folder holds the glyphs
        writer.add(embeddings)
    return (f"gramx serve {shlex.quote(str(moved(model.source)))} --index {shlex.quote(str(moved(folder)))} "
            f"--media {shlex.quote(str(opts.data))}")


def _map_panel(analysis: Analysis, seed: int, per_modality: int = 200) -> dict:
    """Up to ``per_modality`` test items of each non-text modality (same rows for all), for the 2-D map."""
    import torch

    emb = analysis.embeddings
    feats, labels = {}, {}
    for name in analysis.names:
        if name == "text":
            continue  # captions repeat; the class prompts stand for the text modality
        rows = emb.masks[name].nonzero().squeeze(1)
        pick = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed))[:per_modality]
        rows = rows[pick.sort().values]
        feats[name] = emb.feats[name][rows].numpy()
        labels[name] = [emb.labels[i] for i in rows.tolist()]
    return {"feats": feats, "labels": labels,
            "prompts": None if analysis.prompts is None else analysis.prompts.numpy()}
