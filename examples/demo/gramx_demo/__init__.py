"""``gramx demo``: train, evaluate and explain GRAM vs pairwise alignment on bundled data.

Installed, this distribution adds the ``demo`` sub-command through the ``gramx`` entry point
``demo = "gramx_demo"`` (hook ``gramx_register_commands``)::

    gramx demo                      # digits (GRAM recipe, pairwise, Symile) + objectives (a subset, joint tasks)
    gramx demo --stage objectives   # TRIANGLE, Symile and pairwise where both modalities are needed
    gramx demo --stage media        # MP4 clips (video + AAC audio) + SRT subtitles + text
    gramx demo --stage shapes       # synthetic 3-D shapes: depth + point cloud + text
    gramx demo --stage all -o runs/demo
    gramx demo --quick              # a shortened run (tests, smoke checks)

Everything runs through the library (:func:`gramx.train.loop.train`, :func:`gramx.load_model`,
:mod:`gramx.evaluate.report`); the figures and ``report.md`` are written by this package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gramx

__all__ = ["gramx_register_commands", "add_arguments", "cmd_demo", "__version__"]

__version__ = "0.1.0"

STAGES = ("digits", "objectives", "media", "shapes")
DEFAULT_STAGES = "digits,objectives"


def stage_list(text: str) -> tuple[str, ...]:
    """``--stage``: comma-separated stage names, or ``all``."""
    if text == "all":
        return STAGES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown stage {', '.join(unknown) or text!r}; choose from "
                                         f"{', '.join(STAGES)} or all")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", type=stage_list, default=stage_list(DEFAULT_STAGES), metavar="STAGES",
                        help=f"what to run, comma-separated: {', '.join(STAGES)}, or all (default {DEFAULT_STAGES})")
    parser.add_argument("-o", "--output", type=Path, default=Path("demo-report"),
                        help="report folder (default demo-report/); models and data go to its work/")
    parser.add_argument("--quick", action="store_true",
                        help="a shortened run: data subsets and few steps (about a minute)")
    parser.add_argument("--epochs", type=int, default=None, help="digits: epochs per model (default 5; --quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of data subsets and training (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: small convolutions gain little from more, and on a "
                        "busy machine 2 threads ran 8x slower per step than 1)")
    parser.add_argument("--data", type=Path, default=None, help="digits data folder (default examples/data/digits)")
    parser.add_argument("--classes", type=Path, default=None,
                        help="class names, line i = label i (default examples/classes-digits.txt)")
    parser.add_argument("--template", default="the digit {}", help='zero-shot prompt template (default "the digit {}")')
    parser.add_argument("--no-glyph", action="store_true", help="leave out the glyph modality even when installed")
    parser.add_argument("--map", choices=("tsne", "pca"), default="tsne", help="2-D map method (default tsne)")
    parser.add_argument("--clips", type=int, default=200, help="media: number of clips to build (default 200)")
    parser.add_argument("--query", action="append", help='media: text queries to search (default "seven", "two")')
    parser.add_argument("--no-progress", action="store_true", help="no progress reports")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report folder even if it is not an earlier demo report (default: refuse)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")


@gramx.hookimpl
def gramx_register_commands(subparsers):
    parser = subparsers.add_parser(
        "demo", help="train + evaluate GRAM vs pairwise on bundled data and write a report",
        description="Train and evaluate GRAM vs pairwise alignment on bundled data, then write a report.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[4:10]),
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from gramx_demo.run import run_demo

    return run_demo(args)
