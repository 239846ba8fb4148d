"""The version number: one source, the one the installed distribution and `gramx --version` report."""

from __future__ import annotations

from importlib.metadata import version

import gramx
from gramx.cli import main
from gramx.version import __version__


def test_the_package_and_its_distribution_agree_on_the_version():
    assert gramx.__version__ == __version__ == version("gramx")


def test_gramx_version_prints_it(capsys):
    try:
        assert main(["--version"]) == 0
    except SystemExit as exit_:  # argparse's version action exits
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out
