"""The ``gramx`` command: parse the arguments, run the command, print errors as one line and a hint.

Each group of commands adds itself to the parser (``register``); plugins add theirs through
the ``gramx_register_commands`` hook, which needs plugin discovery: the parser does that only
when the command line asks for a command that is not gramx's own (or for the whole help).
``--debug`` shows the traceback of an error.
"""

from __future__ import annotations

import argparse
import sys

from gramx.cli import index_commands, plugin_commands, serve_commands, train_commands
from gramx.cli.options import Commands
from gramx.errors import GramxError
from gramx.plugins.host import get_host
from gramx.version import __version__

__all__ = ["main", "build_parser"]

EXAMPLES = """\
examples:
  gramx plugins list                                  the installed modalities
  gramx train examples/digits.yaml                    train audio + image + text together
  gramx eval runs/digits/model examples/data/digits/test.jsonl --classes examples/classes-digits.txt
  gramx embed runs/digits/model examples/data/digits/test.jsonl -o runs/digits/index
  gramx search runs/digits/model --index runs/digits/index --query "seven" --modality audio,image
  gramx serve runs/digits/model --index runs/digits/index    search it in a browser at http://127.0.0.1:8000/
  gramx extend add runs/digits-a/model examples/extend-add-audio.yaml
  gramx export runs/digits/model -o shared/digits   a copy that carries its pretrained folders
  gramx shards examples/data/digits/train.jsonl -o runs/digits-shards --shard-size 100
  gramx config reference                              every key of a run file

Relative paths in a run or bridge file resolve against that file's folder; paths typed on the
command line (arguments, --set) against the working folder. Nothing is ever written over a file
or folder gramx did not make, unless you pass --overwrite."""

#: The groups of gramx's own commands.
GROUPS = (plugin_commands, train_commands, index_commands, serve_commands)


def build_parser(plugin_commands: bool = True) -> argparse.ArgumentParser:
    """The argument parser of the ``gramx`` command; ``plugin_commands`` adds those plugins contribute.

    Its ``own_commands`` default lists gramx's own commands.
    """
    parser = argparse.ArgumentParser(
        prog="gramx", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Align any number of modalities in one embedding space with the Gram volume, and grow "
        "that space through plugins.")
    parser.add_argument("--version", action="version", version=f"gramx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    commands = Commands(subparsers, common)
    for group in GROUPS:
        group.register(commands)
    parser.set_defaults(own_commands=commands.names)
    if plugin_commands:
        get_host().add_commands(subparsers, parents=[common])  # e.g. `gramx demo`
    return parser


def _parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """The parser ``argv`` needs: with plugin commands unless it names one of gramx's own (or asks the version)."""
    parser = build_parser(plugin_commands=False)
    first = next((a for a in argv if not a.startswith("-")), None)
    own = first in parser.get_default("own_commands") if first else "--version" in argv and not {"-h", "--help"} & set(argv)
    return parser if own else build_parser()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gramx`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser_for(argv).parse_args(argv)
    try:
        return args.func(args) or 0
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        if isinstance(exc, KeyboardInterrupt):
            print("gramx: interrupted", file=sys.stderr)
            return 130
        known = isinstance(exc, GramxError | FileNotFoundError)
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        print(f"gramx: error: {' '.join(message.split())}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        print(f"hint: {hint}" if hint else "hint: run with --debug for the full traceback", file=sys.stderr)
        return 1
