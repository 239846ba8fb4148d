"""The options the ``gramx`` commands share, and how a command is added to the parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["Commands", "count", "modalities", "run_file_options", "resume_option", "modalities_option",
           "model_options"]


class Commands:
    """Adds commands and groups of commands to the ``gramx`` parser, each with the common options."""

    def __init__(self, subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser):
        self.subparsers, self.common = subparsers, common
        self.names: list[str] = []  # the commands added here

    def add(self, name: str, help: str, func: Callable[[argparse.Namespace], int] | None = None,
            ) -> argparse.ArgumentParser:
        """A command ``name`` that runs ``func(args)``."""
        sub = self.subparsers.add_parser(name, parents=[self.common], help=help,
                                         description=help[0].upper() + help[1:] + ".")
        self.names.append(name)
        if func is not None:
            sub.set_defaults(func=func)
        return sub

    def group(self, name: str, help: str) -> Commands:
        """A command ``name`` whose sub-commands the returned :class:`Commands` adds."""
        subparsers = self.add(name, help).add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
        return Commands(subparsers, self.common)


def count(minimum: int = 1) -> Callable[[str], int]:
    """The argparse type of a count option: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def modalities(args: argparse.Namespace) -> list[str] | None:
    """The modalities ``--modalities A,B`` names, or None for all."""
    return [name.strip() for name in args.modalities.split(",")] if args.modalities else None


def run_file_options(p: argparse.ArgumentParser, writes: bool = True) -> None:
    """``--set``, ``--device`` and (for commands that write) ``--overwrite``."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. optim.lr=3e-4")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    if writes:
        p.add_argument("--overwrite", action="store_true", help="replace the output folder even if gramx "
                       "did not make it (default: refuse)")


def resume_option(p: argparse.ArgumentParser) -> None:
    """``--resume [latest]``."""
    p.add_argument("--resume", nargs="?", const="required", choices=["required", "latest"],
                   help="continue from the newest checkpoint; `--resume latest` starts fresh when there is "
                   "none (the run file's output.resume)")


def modalities_option(p: argparse.ArgumentParser) -> None:
    """``--modalities A,B``: load only some of a model's modalities."""
    p.add_argument("--modalities", metavar="A,B", help="load only these modalities of the model (their "
                   "plugins alone need to be installed); default: all")


def model_options(p: argparse.ArgumentParser, loading: bool = True) -> None:
    """``MODEL`` and ``--device``; with ``loading``, a ``MANIFEST`` and how to load it."""
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    if loading:
        modalities_option(p)
        p.add_argument("manifest", metavar="MANIFEST", help="JSONL or CSV manifest")
        p.add_argument("--batch-size", type=count(), default=64, help="rows per batch (default 64)")
        p.add_argument("--workers", type=count(0), default=0, help="DataLoader worker processes")
        p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="a bad row: stop (default) or skip it and report it")
