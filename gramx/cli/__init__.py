"""The ``gramx`` command line: one module per group of commands, each calling the library."""

from gramx.cli.app import main

__all__ = ["main"]
