"""The ``gramx demo`` command: runs the chosen stages, then writes ``report.md``.

The report folder is written like every gramx output: into a temporary sibling, renamed into
place at the end; an earlier demo report there is replaced, anything else only with
``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gramx.files.atomic import Artefact, atomic_directory, check_output
from gramx.errors import GramxError
from gramx.evaluate.report import read_classes
from gramx_demo.common import EXAMPLES, Timings, default_data_dir, format_table, say

__all__ = ["REPORT", "run_demo"]

#: A demo report folder, recognised by its results.json.
REPORT = Artefact("gramx demo report", "results.json", "gramx-demo-report", ("report.md", "figures/", "work/"))


def _write_results(out: Path, timings: Timings, digits, objectives, media, shapes) -> Path:
    """``results.json``: every metric of the run, for scripts and tests."""
    results: dict = {"format": REPORT.format, "timings": {k: {"wall_s": round(w, 2), "cpu_s": round(c, 2)} for k, (w, c) in timings.steps.items()}}
    if digits is not None:
        results["digits"] = {
            "modalities": digits.modalities, "train_tuples": digits.train_rows, "test_tuples": digits.test_rows,
            "steps": digits.steps, "config": digits.config, "serve": digits.serve,
            "models": {m: a.report for m, a in digits.analyses.items()},
            "figures": {k: str(v.relative_to(out)) for k, v in digits.figures.items()},
        }
    if objectives is not None:
        results["objectives"] = {"results": objectives["results"], "figure": str(objectives["figure"].relative_to(out))}
    if media is not None:
        results["media"] = {"clips": media["clips"], "models": media["reports"]}
    if shapes is not None:
        results["shapes"] = {"train": shapes["train"], "test": shapes["test"], "models": shapes["reports"]}
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path


def _quiet_libraries() -> None:
    """Keep the terminal to the demo's own lines and progress bars."""
    logging.getLogger("gramx").setLevel(logging.WARNING)
    for name in ("transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - gramx-text depends on transformers
        pass
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter(), time.process_time()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    _quiet_libraries()
    stages = args.stage
    data = (args.data or default_data_dir()).resolve()
    if {"digits", "media"} & set(stages) and not (data / "train.jsonl").is_file():
        raise GramxError(f"no digits data at {data} (train.jsonl is missing)",
                         hint="pass --data DIR: the examples/data/digits folder of a gramx checkout")
    final: Path = args.output.expanduser().resolve()
    check_output(final, REPORT, args.overwrite)  # before minutes of work
    with atomic_directory(final, REPORT, args.overwrite) as out:
        report, digits = _run_stages(args, stages, data, out, final, started)
    say(f"\nreport: {final / report.relative_to(out)}")
    if digits is not None:
        say(f"search the digits test split in a browser (then open http://127.0.0.1:8000/):\n  {digits.serve}")
    return 0


def _run_stages(args: argparse.Namespace, stages: tuple[str, ...], data: Path, out: Path, final: Path,
                started: tuple[float, float]) -> tuple[Path, object]:
    """Run the stages, writing into ``out`` (renamed to ``final`` afterwards); returns report.md and the
    digits stage's result (None when it did not run)."""
    timings = Timings()
    progress = not args.no_progress
    say(f"gramx demo: stage(s) {', '.join(stages)}; report in {final}"
        + (" (quick run: data subsets, few steps)" if args.quick else ""))

    digits = objectives = media = shapes = opts = None
    if "digits" in stages:
        from gramx_demo.digits import DigitsOptions, run_digits

        classes_file = args.classes or EXAMPLES / "classes-digits.txt"
        opts = DigitsOptions(
            out=out, data=data, classes=read_classes(classes_file),
            template=args.template, epochs=args.epochs or (3 if args.quick else 5), seed=args.seed,
            quick=args.quick, glyph=False if args.no_glyph else None, progress=progress, map_method=args.map,
            final=final,
        )
        say("\n=== stage 1: digits (GRAM recipe, pairwise, Symile) ===")
        digits = run_digits(opts, timings)
    if "objectives" in stages:
        from gramx_demo.objectives import run_objectives

        say("\n=== stage 2: objectives on tasks that need both modalities (composition, modular sum) ===")
        objectives = run_objectives(out, timings, quick=args.quick, seed=args.seed, progress=progress)
    if "media" in stages:
        from gramx_demo.media import run_media

        say("\n=== stage 3: clips (video + audio + subtitles + text) ===")
        media = run_media(out, data, timings, clips=args.clips,
                          queries=args.query or ["seven", "two"], quick=args.quick, seed=args.seed,
                          progress=progress)
    if "shapes" in stages:
        from gramx_demo.shapes import run_shapes

        say("\n=== stage 4: 3-D shapes (depth + point cloud + text) ===")
        shapes = run_shapes(out, timings, quick=args.quick, seed=args.seed, progress=progress)

    command = "gramx demo " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["demo"] else "gramx demo"
    wall = time.perf_counter() - started[0]
    cpu = time.process_time() - started[1]
    timings.steps["total (whole command)"] = (wall, cpu)
    with_total = Timings({k: v for k, v in timings.steps.items() if k != "total (whole command)"})
    with_total.steps["other (imports, set-up)"] = (wall - with_total.total()[0], cpu - with_total.total()[1])
    from gramx_demo.report import write_report

    report = write_report(out, with_total, opts=opts, digits=digits, objectives=objectives, media=media,
                          shapes=shapes, command=command.strip())
    _write_results(out, with_total, digits, objectives, media, shapes)
    say("\nTiming (wall s / CPU s of this process)")
    say(format_table([[k, f"{w:.1f}", f"{c:.1f}"] for k, (w, c) in timings.steps.items()],
                     ["step", "wall s", "CPU s"]))
    return report, digits
