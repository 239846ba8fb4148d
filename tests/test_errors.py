"""The error types users see: each carries a hint, a load error names its source and survives pickling."""

from __future__ import annotations

import pickle

import pytest

from gramx.errors import ConfigError, GramxError, LoadError, PluginError


@pytest.mark.parametrize("kind", [GramxError, PluginError, ConfigError])
def test_every_error_is_a_gramx_error_with_a_hint(kind):
    error = kind("model.dim: must be positive", hint="set dim to 512")
    assert isinstance(error, GramxError) and str(error) == "model.dim: must be positive"
    assert error.hint == "set dim to 512" and kind("no hint").hint is None


def test_a_load_error_names_its_source_and_problem():
    error = LoadError("clips/a.wav", "not a WAV file", hint="convert it with ffmpeg")
    assert str(error) == "clips/a.wav: not a WAV file"
    assert (error.source, error.problem, error.hint) == ("clips/a.wav", "not a WAV file", "convert it with ffmpeg")


def test_a_load_error_crosses_processes_intact():
    """A DataLoader worker pickles the error it raises: the main process sees the same message and hint."""
    again = pickle.loads(pickle.dumps(LoadError("a.wav", "truncated", hint="download it again")))
    assert type(again) is LoadError and str(again) == "a.wav: truncated" and again.hint == "download it again"
