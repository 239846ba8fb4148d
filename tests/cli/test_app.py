"""The gramx command: errors as one line and a hint (--debug re-raises), the parser's conventions, and plugin
commands built only when the command line may ask for one."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from fixture_modalities import one_line_error, subprocess_env

from gramx.cli import train_commands
from gramx.cli.app import build_parser, main
from gramx.errors import GramxError
from gramx.plugins import host as plugins
from gramx.version import __version__


def failing_with(monkeypatch, exc: BaseException) -> list[str]:
    """``gramx config schema`` raising ``exc``: its command line."""
    def fail(args):
        raise exc

    monkeypatch.setattr(train_commands, "cmd_config_schema", fail)
    return ["config", "schema"]


@pytest.mark.parametrize("exc, error, hint", [
    (GramxError("run.yaml: no such\n  key", hint="see gramx config reference"), "run.yaml: no such key",
     "see gramx config reference"),
    (FileNotFoundError("nowhere.jsonl"), "nowhere.jsonl", "run with --debug for the full traceback"),
    (ValueError("a bug\nat line 3"), "ValueError: a bug at line 3", "run with --debug for the full traceback"),
])
def test_an_error_is_one_line_and_a_hint(monkeypatch, capsys, exc, error, hint):
    assert main(failing_with(monkeypatch, exc)) == 1
    assert one_line_error(capsys) == (f"gramx: error: {error}", f"hint: {hint}")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_re_raises_the_error_itself(monkeypatch, where):
    exc = ValueError("a bug")
    argv = failing_with(monkeypatch, exc)
    with pytest.raises(ValueError) as info:
        main(["--debug", *argv] if where == "before" else [*argv, "--debug"])
    assert info.value is exc


def test_an_interrupt_is_exit_status_130(monkeypatch, capsys):
    assert main(failing_with(monkeypatch, KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "gramx: interrupted\n"


@pytest.fixture
def discoveries(monkeypatch):
    """How many times plugins are discovered (discovery itself is left out: no plugin is loaded)."""
    calls = []
    monkeypatch.setattr(plugins.PluginHost, "discover", lambda self: calls.append(self))
    plugins.reset()
    yield calls
    plugins.reset()


def test_the_version_and_gramxs_own_commands_do_not_discover_plugins(discoveries, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"gramx {__version__}\n"
    assert main(failing_with(monkeypatch, GramxError("stop"))) == 1
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    build_parser(plugin_commands=False)
    assert discoveries == []


@pytest.mark.parametrize("argv", [["--help"], ["--version", "--help"], ["demo"], []])
def test_the_whole_help_or_another_command_discovers_plugins_once(discoveries, argv):
    with pytest.raises(SystemExit):
        main(argv)
    assert len(discoveries) == 1


def test_errors_are_one_line_with_a_hint(trained, capsys):
    model = str(trained.model)
    assert main(["search", model, "--index", str(trained.index), "--query-file", "x.npy"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["gramx: error: --query-file needs --query-modality NAME (the file's modality, e.g. audio)",
                   "hint: run with --debug for the full traceback"]
    assert main(["eval", str(trained.folder), str(trained.folder / "val.jsonl")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not a gramx model directory" in err[0] and err[1].startswith("hint:")
    with pytest.raises(Exception):
        main(["eval", str(trained.folder), str(trained.folder / "val.jsonl"), "--debug"])


def _leaves(parser):
    """Every runnable sub-command parser, with its command words."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield [], parser
        return
    for name, sub in actions[0].choices.items():
        for words, leaf in _leaves(sub):
            yield [name, *words], leaf


def test_cli_conventions(fixture_plugins, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"gramx {__version__}"
    parser = build_parser()
    help_text = parser.format_help()
    assert "examples:" in help_text and "gramx train examples/digits.yaml" in help_text
    leaves = list(_leaves(parser))
    assert {"plugins list", "train", "embed", "config reference"} <= {" ".join(w) for w, _ in leaves}
    for words, leaf in leaves:  # the errors recommend --debug: every command accepts it
        assert "--debug" in leaf.format_help(), " ".join(words)
    assert main(["plugins", "list", "--debug"]) == 0


@pytest.mark.slow
def test_plugin_commands_accept_debug_too():
    """With the real plugins installed (a fresh process): `gramx demo` takes --debug like every command."""
    env = {k: v for k, v in subprocess_env().items() if k != plugins.DISABLE_ENV}
    code = ("from gramx.cli.app import build_parser; p = build_parser(); "
            "demo = p._subparsers._group_actions[0].choices['demo']; print('--debug' in demo.format_help())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
