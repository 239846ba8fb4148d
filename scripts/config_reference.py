"""Write docs/config-reference.md (the run-file reference for the built-in plugins), so it cannot drift.

    python scripts/config_reference.py          # rewrite the file
    python scripts/config_reference.py --check  # exit 1 if the file is out of date

Only the modalities of the distributions in this repository (plugins/*, examples/*) are
listed, whatever else is installed; `gramx config reference` shows every installed one.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from gramx.plugins.host import get_host
from gramx.cli.reference import render

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "config-reference.md"


def repository_distributions() -> set[str]:
    """The names of the plugin distributions that live in this repository."""
    files = [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]
    return {tomllib.loads(f.read_text())["project"]["name"] for f in files}


def built_in_modalities() -> dict:
    host = get_host()
    ours = repository_distributions()
    return {name: m for name, m in host.modalities().items() if host.provider(name).distribution in ours}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args()
    text = render(built_in_modalities())
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
