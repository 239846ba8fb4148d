"""The plugin host: entry-point discovery, failure isolation, the registry, plugin commands."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

import gramx
from gramx.plugins import host as plugins
from gramx.cli import main
from gramx.testing import ConformanceError, check_modality


class Cfg(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


def _modality(name):
    return gramx.Modality(name=name, load=lambda v, c: v, build_encoder=lambda c: None, config=Cfg)


def test_third_party_plugin_is_discovered_through_its_entry_point(host, imu_csv):
    record = host.records["imu"]
    assert (record.status, record.distribution, record.version, record.modalities) == (
        "ok", "gramx-imu", "0.3.0", ["imu"])
    imu = gramx.get_modality("imu")
    assert imu.description == "6-axis IMU windows from CSV"
    assert check_modality(imu, [imu_csv]) == list(gramx.testing.CHECKS)


def test_broken_plugins_are_reported_and_skipped(host):
    assert host.records["broken-import"].status == "error"
    assert "ModuleNotFoundError" in host.records["broken-import"].error
    assert "gramx_dependency_that_is_not_installed" in host.records["broken-import"].error
    assert "RuntimeError: this plugin's hook is broken" in host.records["broken-hook"].error
    # nothing from a failing plugin is kept, everything else works
    assert "half_registered" not in host.modalities()
    assert gramx.get_modality("imu").name == "imu"


def test_disable_plugins_by_name(site_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(site_dir))
    monkeypatch.setenv(plugins.DISABLE_ENV, "imu, broken-import")
    plugins.reset()
    try:
        host = plugins.get_host()
        assert host.records["imu"].status == "disabled"
        assert host.records["broken-import"].status == "disabled"
        with pytest.raises(gramx.PluginError, match="unknown modality 'imu'"):
            host.get_modality("imu")
    finally:
        plugins.reset()


def test_duplicate_modality_names_both_providers(host):
    class Again:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register(_modality("imu"))

    record = gramx.register_plugin(Again(), name="imu-copy")
    assert record.status == "error"
    assert "'imu'" in record.error and "'imu-copy'" in record.error
    assert host.provider("imu").name == "imu"


def test_invalid_registrations_are_rejected(host):
    class NotAModality:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register({"name": "dict"})

    class BadName:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register(_modality("Bad Name"))

    assert "expects a gramx.Modality" in gramx.register_plugin(NotAModality(), "dicty").error
    assert "invalid modality name" in gramx.register_plugin(BadName(), "bad-name").error


def test_register_plugin_programmatically(host):
    class Notebook:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register(_modality("scribble"))

    record = gramx.register_plugin(Notebook(), name="notebook")
    assert (record.status, record.modalities) == ("ok", ["scribble"])
    assert gramx.get_modality("scribble").name == "scribble"


def test_unknown_modality_error_lists_available_and_broken(host):
    with pytest.raises(gramx.PluginError) as info:
        gramx.get_modality("smell")
    assert "imu" in str(info.value)
    assert "broken-import" in info.value.hint
    assert "gramx-smell" not in info.value.hint  # no made-up distribution name


def test_the_hint_for_a_missing_modality_names_the_distribution_of_the_entry_point(monkeypatch):
    """`image` ships in gramx-video: with that plugin off, the hint names it (not a made-up gramx-image)."""
    monkeypatch.setenv(plugins.DISABLE_ENV, "video,audio")
    plugins.reset()
    try:
        with pytest.raises(gramx.PluginError) as info:
            gramx.get_modality("image")
        assert "video (gramx-video, disabled)" in info.value.hint and "gramx-image" not in info.value.hint
        with pytest.raises(gramx.PluginError) as info:
            gramx.get_modality("audio")
        assert info.value.hint.startswith("plugin audio (gramx-audio, disabled) would provide it")
    finally:
        plugins.reset()


def test_a_plugin_whose_hook_raises_is_unregistered_and_adds_no_command(host):
    """broken-hook registers a modality, then raises; its (working) command hook must not count either."""
    assert host.pm.get_plugin("broken-hook") is None
    assert host.records["broken-hook"].commands == []
    from gramx.cli.app import build_parser

    assert "half-command" not in build_parser()._subparsers._group_actions[0].choices
    with pytest.raises(SystemExit):
        main(["half-command"])


def _commands(parser: argparse.ArgumentParser) -> dict:
    return parser._subparsers._group_actions[0].choices


def test_a_command_hook_that_raises_after_add_parser_leaves_nothing(host):
    class Half:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register(_modality("halfway"))

        @gramx.hookimpl
        def gramx_register_commands(self, subparsers):
            subparsers.add_parser("halfway", help="added, then the hook fails")
            raise RuntimeError("the command hook broke")

    record = gramx.register_plugin(Half(), name="half")
    assert record.status == "error" and "the command hook broke" in record.error
    assert "halfway" not in host.modalities()  # the whole plugin is off, its modality too
    assert host.pm.get_plugin("half") is None
    from gramx.cli.app import build_parser

    assert "halfway" not in _commands(build_parser())


def test_a_command_without_handler_is_an_error(host):
    class NoHandler:
        @gramx.hookimpl
        def gramx_register_commands(self, subparsers):
            subparsers.add_parser("nohandler")

    record = gramx.register_plugin(NoHandler(), name="no-handler")
    assert record.status == "error" and "'nohandler' has no handler" in record.error


def test_plugin_commands_take_opt_in_arguments_and_run(host, capsys):
    class Greeter:
        @gramx.hookimpl
        def gramx_register_commands(self, subparsers):
            parser = subparsers.add_parser("greet", help="say hello", description="Say hello.")
            parser.add_argument("--name", default="world")
            parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    class Silent:
        @gramx.hookimpl
        def gramx_register_commands(self):  # takes none of the spec's arguments: allowed
            pass

    assert gramx.register_plugin(Greeter(), name="greeter").status == "ok"
    assert gramx.register_plugin(Silent(), name="silent").status == "ok"
    assert host.records["greeter"].commands == ["greet"]
    assert main(["greet", "--name", "gramx"]) == 0
    assert capsys.readouterr().out == "hello gramx\n"
    assert main(["greet", "--debug"]) == 0  # the host's common options reach plugin commands
    from gramx.cli.app import build_parser

    assert "Say hello." in _commands(build_parser())["greet"].format_help()


def test_a_plugin_command_may_not_replace_a_gramx_command(host):
    class Hijack:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register(_modality("hijacker"))

        @gramx.hookimpl
        def gramx_register_commands(self, subparsers):
            subparsers.add_parser("train").set_defaults(func=lambda args: 0)

    gramx.register_plugin(Hijack(), name="hijack")
    from gramx.cli.app import build_parser

    build_parser()
    assert "already exists" in host.records["hijack"].error and "hijacker" not in host.modalities()


@pytest.mark.slow
def test_no_build_output_is_tracked_or_left_in_the_fixtures(site_dir):
    """setuptools writes build/ next to a package it installs; neither the tree nor git may keep it."""
    root = Path(__file__).resolve().parents[2]
    fixtures = root / "tests" / "fixtures"
    assert not [p for p in fixtures.rglob("*") if p.name in ("build", "dist") or p.name.endswith(".egg-info")]
    listing = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = [f for f in listing.stdout.splitlines()
               if {"build", "dist"} & set(Path(f).parts[:-1]) or ".egg-info" in f]
    assert tracked == []


def test_conformance_kit_catches_a_wrong_output_shape(host, imu_csv):
    imu = gramx.get_modality("imu")
    bad = gramx.Modality(
        name="imu_bad", load=imu.load, config=imu.config,
        build_encoder=lambda cfg: __import__("torch").nn.Conv1d(6, 4, 3),  # [B, 4, T]: not [B, F]
    )
    with pytest.raises(ConformanceError, match=r"\[B=1, feature_dim\]"):
        check_modality(bad, [imu_csv])


class Seq(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # no docstring, on purpose


def _sequences(collate=None):
    import torch

    return gramx.Modality(name="seq", load=lambda value, cfg: torch.ones(int(value)), config=Seq, collate=collate,
                          build_encoder=lambda cfg: torch.nn.Identity(), value_is_path=False)


def test_samples_of_different_sizes_fail_naming_the_modality_and_the_fix():
    seq = _sequences()
    with pytest.raises(gramx.PluginError, match=r"modality 'seq': samples of different shapes.*\(3,\), \(5,\)") as info:
        seq.make_batch([seq.load(3, Seq()), seq.load(5, Seq())], Seq())
    assert "collate" in info.value.hint
    with pytest.raises(ConformanceError, match="different shapes"):  # the kit batches all samples together
        check_modality(seq, [3, 5])


def test_unknown_modality_suggests_the_closest_installed_one(host):
    with pytest.raises(gramx.PluginError) as info:
        gramx.get_modality("imus")
    assert info.value.hint.startswith("did you mean 'imu'?")


@pytest.mark.slow
def test_the_configuration_reference_copes_with_any_installed_plugin(site_dir, host, capsys):
    """A config class without a docstring, and third-party plugins, do not break the reference or its check."""
    class Bare:
        @gramx.hookimpl
        def gramx_register_modalities(self, register):
            register(_sequences())

    gramx.register_plugin(Bare(), name="bare")
    assert main(["config", "reference"]) == 0
    out = capsys.readouterr().out
    assert "### seq" in out and "### imu: 6-axis IMU windows from CSV" in out
    env = {**os.environ, "PYTHONPATH": str(site_dir)}  # imu installed beside the built-in plugins
    env.pop(plugins.DISABLE_ENV, None)
    script = Path(__file__).resolve().parents[2] / "scripts" / "config_reference.py"
    check = subprocess.run([sys.executable, str(script), "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
