"""Every objective on the three digits tasks, same encoders, budget and seeds: where does the volume win?

    python benchmarks/bench_objectives.py                      # 11 objectives x 3 tasks x 3 seeds
    python benchmarks/bench_objectives.py --seeds 0 --tasks modsum --objectives Symile,pairwise
    python benchmarks/bench_objectives.py --json out.json      # also the raw figures
    python benchmarks/bench_objectives.py --tasks modsum-scratch --objectives Symile \
        --set modalities.audio.head.batch_norm=false         # an ablation: overrides for every run

The tasks, objectives, protocol and measures are the demo's (examples/demo/gramx_demo/
objectives.py, which `gramx demo` runs a subset of): ``digits`` from scratch (zero-shot),
``composition`` (text -> (audio, image)) and ``modsum`` ((audio, image) -> the ten captions,
chance 10%) fine-tuning the base space of examples/compose/base.yaml; ``composition-scratch``
and ``modsum-scratch`` train them from scratch (examples/compose/*-scratch.yaml). Prints one markdown
table per task: mean ± half the range over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from gramx_demo.common import markdown_table
from gramx_demo.objectives import MEASURES, OBJECTIVES, TASKS, compare, summary_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,composition,modsum",
                        help=f"comma-separated, of {', '.join(TASKS)} (default: the first three)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated labels (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a run-file override applied last to every run (repeatable)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    tasks, objectives = args.tasks.split(","), args.objectives.split(",")
    unknown = sorted(set(tasks) - set(TASKS)) + sorted(set(objectives) - set(OBJECTIVES))
    if unknown:
        parser.error(f"unknown task or objective: {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="gramx-objectives-") as work:
        results = compare(tasks, objectives, seeds, Path(work), overrides=tuple(args.set))
    for task in tasks:
        headline = MEASURES[task][0][0]
        print(f"\n**{task}** (headline: {headline}; {len(seeds)} seed(s): mean ± half the range)\n")
        print(markdown_table(*summary_rows(results, task)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
