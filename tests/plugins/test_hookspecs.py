"""The hook specifications are the plugin docs: each is documented in full, in the order the host calls them."""

from __future__ import annotations

import inspect
import re

import pytest

from gramx.losses.table import LOSS_TYPES
from gramx.plugins import hookspecs
from gramx.plugins.hookspecs import hookimpl

def words(spec_name: str) -> str:
    """The docstring of the spec ``spec_name`` on one line."""
    return " ".join(inspect.getdoc(getattr(hookspecs, spec_name)).split())


SPECS = [getattr(hookspecs, name) for name in dir(hookspecs) if name.startswith("gramx_")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_each_spec_documents_when_it_runs_each_argument_its_return_and_its_version(spec):
    doc = inspect.getdoc(spec)
    assert doc and "Called " in doc, f"{spec.__name__}: say when the hook is called"
    for argument in inspect.signature(spec).parameters:
        assert f":param {argument}:" in doc, f"{spec.__name__}: no :param {argument}:"
    assert ":return:" in doc and re.search(r"\.\. versionadded:: \d", doc)


def test_the_registration_hooks_run_in_the_order_their_docs_give(fixture_plugins):
    calls = []

    class Recorder:
        @hookimpl
        def gramx_register_commands(self, subparsers):
            calls.append("gramx_register_commands")

        @hookimpl
        def gramx_register_objectives(self):  # an implementation may take fewer arguments than its spec
            calls.append("gramx_register_objectives")

        @hookimpl
        def gramx_register_modalities(self, register):
            calls.append("gramx_register_modalities")

    fixture_plugins.register_plugin(Recorder(), name="recorder")
    assert calls == ["gramx_register_modalities", "gramx_register_objectives", "gramx_register_commands"]
    for earlier, later in zip(calls, calls[1:]):
        assert f"after :func:`{earlier}`" in words(later), f"{later}'s docstring: say it runs after {earlier}"


def test_the_objectives_spec_names_the_built_in_loss_types():
    listed = re.search(r"not a built-in one: ([a-z_, ]+)\)", words("gramx_register_objectives")).group(1)
    assert listed.split(", ") == list(LOSS_TYPES)
