"""The objectives stage: GRAM, TRIANGLE, Symile, pairwise and newer peers on tasks that need every modality at once.

Three tasks on the digits data (examples/compose, test split; train split for training):

- ``digits``: every modality carries the label; trained from scratch (zero-shot accuracy);
- ``composition``: caption "spoken x, signed y"; text -> (audio, image) retrieval;
- ``modsum``: caption "sum ends in (x + y) mod 10", which says nothing about either modality
  alone; the (audio, image) pair classified among the ten captions (chance 10%).

The two joint tasks fine-tune a base space (examples/compose/base.yaml: the plain digits,
pairwise InfoNCE, same seed), as GRAM fine-tunes a pairwise-pretrained model; their
``-scratch`` variants train from scratch with their own run files (examples/compose/*-scratch.yaml:
GRAM + 0.5 pairwise for composition; batch-normalised heads and 40 epochs for modsum). Every
objective gets the same encoders, budget and seeds, and is scored by its own similarity
(``score``) with the cosine-sum beside it. ``gramx demo`` runs a subset;
``python benchmarks/bench_objectives.py`` the full table.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from gramx_demo.common import EXAMPLES, Timings, format_table, run_name, say

__all__ = ["OBJECTIVES", "TASKS", "MEASURES", "DEMO_OBJECTIVES", "train_base", "run_one", "compare", "summary_rows",
           "run_objectives"]

COMPOSE = EXAMPLES / "compose"

#: label -> the run file's ``loss`` section as --set overrides.
OBJECTIVES = {
    "pairwise": ["loss.type=pairwise", "loss.anchor=text"],
    "pairwise all pairs": ["loss.type=pairwise_all"],
    "GRAM": ["loss.type=gram", "loss.anchor=text"],
    "GRAM + warm-up": ["loss.type=gram", "loss.anchor=all", "loss.pairwise_warmup=200"],
    "GRAM cosine-regularised": ["loss.type=gram", "loss.anchor=all", "loss.cosine_weight=2.0"],
    "GRAM + 0.5 pairwise": ["loss.type=gram", "loss.anchor=text", "loss.pairwise_weight=0.5"],
    "TRIANGLE": ["loss.type=triangle", "loss.anchor=text"],
    "Symile": ["loss.type=symile"],
    "PMRL": ["loss.type=pmrl", "loss.temperature=0.1"],  # the authors' regulariser temperature
    "ConFu": ["loss.type=confu"],
    "gated Symile": ["loss.type=gated_symile", "loss.temperature=1.0"],  # the authors' initial logit scale, 1
    # candidates for one recipe on every task: the joint product with a pairwise term
    "Symile + 0.5 pairwise": ["loss.type=symile", "loss.pairwise_weight=0.5"],
    "gated Symile + 0.5 pairwise": ["loss.type=gated_symile", "loss.temperature=1.0", "loss.pairwise_weight=0.5"],
}

#: The subset `gramx demo` runs (the rest: benchmarks/bench_objectives.py).
DEMO_OBJECTIVES = ("pairwise", "GRAM", "Symile")

#: task -> (run file, whether it starts from the base space)
TASKS = {
    "digits": (COMPOSE / "base.yaml", False),
    "composition": (COMPOSE / "composition.yaml", True),
    "modsum": (COMPOSE / "modsum.yaml", True),
    "composition-scratch": (COMPOSE / "composition-scratch.yaml", False),
    "modsum-scratch": (COMPOSE / "modsum-scratch.yaml", False),
}

#: task -> the headline measure's chance level (percent): 100 composition labels, 10 sums
CHANCE = {"digits": 10.0, "composition": 1.0, "modsum": 10.0, "composition-scratch": 1.0, "modsum-scratch": 10.0}

#: task -> [(column, report kind, key)]: what the tables show; the first column is the task's headline.
MEASURES = {
    "digits": [("zero-shot audio", "zeroshot", "audio"), ("zero-shot image", "zeroshot", "image"),
               ("text->(audio,image) R@1", "nway", "text->(audio,image)")],
    "composition": [("text->(audio,image) R@1", "nway", "text->(audio,image)"),
                    ("cosine-sum R@1", "nway_cosine", "text->(audio,image)"),
                    ("(audio,image)->text R@1", "nway", "(audio,image)->text")],
    "modsum": [("(audio,image)->text R@1", "nway", "(audio,image)->text"),
               ("cosine-sum R@1", "nway_cosine", "(audio,image)->text"),
               ("text->(audio,image) R@1", "nway", "text->(audio,image)")],
}
MEASURES |= {f"{task}-scratch": MEASURES[task] for task in ("composition", "modsum")}


def _value(report: dict, kind: str, key: str) -> float:
    entry = report[kind].get(key)
    return entry if isinstance(entry, float) else (entry or {}).get("R@1", float("nan"))


def _train(run_file: Path, overrides: list[str], out: Path, progress: bool) -> tuple[Path, Path | None, object]:
    """Train a run file with overrides into ``out`` (validation left to the caller): ``(model, val, config)``."""
    from gramx.train.config import load_config
    from gramx.train.loop import train

    config = load_config(run_file, [*overrides, f"output.dir={out}", "device=cpu", "logging.tensorboard=false",
                                    f"logging.progress={str(progress).lower()}"])
    val, config.data.val = config.data.val, None  # evaluated once, at the end
    return train(config), val, config


def train_base(seed: int, work: Path, progress: bool = False, overrides: tuple[str, ...] = ()) -> Path:
    """The base space of the joint tasks for ``seed`` (examples/compose/base.yaml)."""
    model_dir, _, _ = _train(COMPOSE / "base.yaml", [f"optim.seed={seed}", *overrides], work / f"base-{seed}", progress)
    return model_dir


def run_one(task: str, objective: str, seed: int, work: Path, base: Path | None, progress: bool = False,
            overrides: tuple[str, ...] = ()) -> dict:
    """Train one objective on one task and evaluate it on the task's test split: ``{column: value, "score": ...}``.

    ``overrides``: applied last, e.g. ``("optim.epochs=1",)`` to shorten the run (tests) or an ablation.
    """
    from gramx.evaluate.report import evaluate
    from gramx.model.model import load_model

    run_file, fine_tune = TASKS[task]
    overrides = [*OBJECTIVES[objective], f"optim.seed={seed}", f"init={base}" if fine_tune else "init=null", *overrides]
    model_dir, val, config = _train(run_file, overrides, work / f"{task}-{run_name(objective)}-{seed}", progress)
    report = evaluate(load_model(model_dir), val, classes=config.eval.classes, template=config.eval.template)
    return {"score": report["score"], **{name: _value(report, kind, key) for name, kind, key in MEASURES[task]}}


def compare(tasks: list[str], objectives: list[str], seeds: list[int], work: Path, timings: Timings | None = None,
            progress: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """Every objective on every task for every seed: ``{task: {objective: [results per seed]}}``."""
    timings = timings or Timings()
    results: dict = {task: {objective: [] for objective in objectives} for task in tasks}
    for seed in seeds:
        base = None
        if any(TASKS[task][1] for task in tasks):
            say(f"training the base space (plain digits, pairwise, seed {seed}) ...")
            with timings(f"objectives: base space, seed {seed}"):
                base = train_base(seed, work, progress, overrides)
        for task in tasks:
            for objective in objectives:
                say(f"{task}: training {objective} (seed {seed}) ...")
                with timings(f"objectives: {task} {objective} seed {seed}"):
                    results[task][objective].append(run_one(task, objective, seed, work, base, progress, overrides))
    return results


def summary_rows(results: dict, task: str) -> tuple[list[list[str]], list[str]]:
    """A table of one task: per objective (and its score), each measure's mean ± half its range over seeds."""
    columns = [name for name, _, _ in MEASURES[task]]
    rows = []
    for objective, runs in results[task].items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs]
            spread = (max(values) - min(values)) / 2
            cells.append(f"{statistics.mean(values):.1f}" + (f" ± {spread:.1f}" if len(values) > 1 else ""))
        rows.append([f"{objective} ({runs[0]['score']})", *cells])
    return rows, ["objective (score)", *columns]


def run_objectives(out: Path, timings: Timings, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """The demo stage: the demo subset of objectives on the two joint tasks, one seed, with a figure."""
    from gramx_demo import plots

    objectives = list(DEMO_OBJECTIVES)
    tasks = ["composition", "modsum"]
    overrides = ("optim.epochs=1",) if quick else ()
    results = compare(tasks, objectives, [seed], out / "work" / "objectives", timings, progress, overrides)
    tables = {task: summary_rows(results, task) for task in tasks}
    for task, (rows, header) in tables.items():
        say(f"\n{task}: test split, percent (each model scored by its own objective's similarity)")
        say(format_table(rows, header))
    headline = {task: {o: results[task][o][0][MEASURES[task][0][0]] for o in objectives} for task in tasks}
    with timings("objectives: figure"):
        figure = plots.objective_bars(headline, {t: MEASURES[t][0][0] for t in tasks}, {t: CHANCE[t] for t in tasks},
                                      path=out / "figures" / "objectives.png")
    return {"tables": tables, "figure": figure, "results": results, "objectives": objectives}
