"""``gramx plugins``: the installed plugins, and the conformance kit run on one of their modalities."""

from __future__ import annotations

import argparse
import json

from gramx.cli.options import Commands
from gramx.cli.output import print_table
from gramx.errors import GramxError
from gramx.plugins.host import get_host, get_modality
from gramx.testing import check_modality

__all__ = ["register"]


def cmd_plugins_list(args: argparse.Namespace) -> int:
    """List installed plugins, their modalities and their status."""
    host = get_host()
    records = sorted(host.records.values(), key=lambda r: r.name)
    modalities = host.modalities()
    if args.json:
        print(json.dumps([
            {"plugin": r.name, "modalities": r.modalities, "commands": r.commands, "version": r.version,
             "distribution": r.distribution, "status": r.status, "error": r.error,
             "descriptions": {m: modalities[m].description for m in r.modalities}}
            for r in records
        ], indent=2))
        return 0
    rows = [
        [r.name, ", ".join(r.modalities + r.commands) or "-", r.version or "-", r.distribution or "-", r.status,
         r.error or ""]
        for r in records
    ]
    print_table(rows, ["plugin", "provides", "version", "distribution", "status", "error"])
    if modalities:
        print()
        print_table([[name, host.provider(name).name, m.description or "-"] for name, m in modalities.items()],
                    ["modality", "plugin", "description"])
    return 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    """Run the conformance kit against an installed modality."""
    modality = get_modality(args.name)
    samples = args.sample or list(modality.samples)
    if not samples:
        raise GramxError(f"modality {args.name!r} ships no sample inputs", hint="pass one or more with --sample FILE")
    for check in check_modality(modality, samples):
        print(f"ok  {check}")
    print(f"{args.name}: conforms to the gramx plugin contract ({len(samples)} sample(s))")
    return 0


def register(commands: Commands) -> None:
    """Add ``plugins list`` and ``plugins check``."""
    plugins = commands.group("plugins", "installed modality plugins")
    listing = plugins.add("list", "list plugins, their modalities and status", cmd_plugins_list)
    listing.add_argument("--json", action="store_true", help="print JSON")
    check = plugins.add("check", "run the conformance kit on a modality", cmd_plugins_check)
    check.add_argument("name", help="modality name")
    check.add_argument("--sample", action="append", help="sample input (repeatable)")
