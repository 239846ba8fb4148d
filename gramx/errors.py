"""The error types gramx raises for bad user input."""

from __future__ import annotations

from pathlib import Path


class GramxError(Exception):
    """Base class of gramx's user-facing errors; ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class LoadError(GramxError):
    """A modality could not load one input; names the file (or value) and the problem."""

    def __init__(self, source: str | Path, problem: str, hint: str | None = None):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}", hint)

    def __reduce__(self):  # rebuilt from its own arguments (e.g. when a DataLoader worker sends it)
        return type(self), (self.source, self.problem, self.hint)


class PluginError(GramxError):
    """A modality is unknown, duplicated or invalid."""


class ConfigError(GramxError):
    """A run configuration is invalid; the message names the key path."""
