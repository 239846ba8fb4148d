"""The version number: one source, the one the installed distribution reports (`gramx --version`: cli/test_app.py)."""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version

import gramx
from gramx.version import __version__


def test_the_package_and_its_distribution_agree_on_one_valid_version():
    assert gramx.__version__ == __version__ == version("gramx")
    assert str(Version(__version__)) == __version__  # a PEP 440 version, written in its normal form
