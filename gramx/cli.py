"""The ``gramx`` command.

Each sub-command is a function ``cmd_<name>(args)``; :func:`build_parser` wires them up.
Errors are printed as one line plus a hint; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from gramx.errors import GramxError

__all__ = ["main", "build_parser"]


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_plugins_list(args: argparse.Namespace) -> int:
    """List installed plugins, their modalities and their status."""
    from gramx.plugins import get_host

    host = get_host()
    records = sorted(host.records.values(), key=lambda r: r.name)
    if args.json:
        print(json.dumps([
            {"plugin": r.name, "modalities": r.modalities, "version": r.version,
             "distribution": r.distribution, "status": r.status, "error": r.error}
            for r in records
        ], indent=2))
        return 0
    rows = [
        [r.name, ", ".join(r.modalities) or "-", r.version or "-", r.distribution or "-", r.status, r.error or ""]
        for r in records
    ]
    _print_table(rows, ["plugin", "modalities", "version", "distribution", "status", "error"])
    return 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    """Run the conformance kit against an installed modality."""
    from gramx.plugins import get_modality
    from gramx.testing import check_modality

    modality = get_modality(args.name)
    samples = args.sample or list(modality.samples)
    if not samples:
        raise GramxError(
            f"modality {args.name!r} ships no sample inputs", hint="pass one or more with --sample FILE"
        )
    for check in check_modality(modality, samples):
        print(f"ok  {check}")
    print(f"{args.name}: conforms to the gramx plugin contract ({len(samples)} sample(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gramx`` command."""
    parser = argparse.ArgumentParser(prog="gramx", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    plugins = commands.add_parser("plugins", help="installed modality plugins")
    plugin_commands = plugins.add_subparsers(dest="plugins_command", required=True)
    listing = plugin_commands.add_parser("list", help="list plugins and their status")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_plugins_list)
    check = plugin_commands.add_parser("check", help="run the conformance kit on a modality")
    check.add_argument("name", help="modality name")
    check.add_argument("--sample", action="append", help="sample input (repeatable)")
    check.set_defaults(func=cmd_plugins_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gramx`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (GramxError, FileNotFoundError, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        if isinstance(exc, KeyboardInterrupt):
            print("gramx: interrupted", file=sys.stderr)
            return 130
        print(f"gramx: error: {exc}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        else:
            print("hint: run with --debug for the full traceback", file=sys.stderr)
        return 1
