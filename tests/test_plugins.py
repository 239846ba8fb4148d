"""The plugin host: entry-point discovery, failure isolation, the registry and `gramx plugins`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest

import gramx
from gramx import plugins
from gramx.cli import main
from gramx.testing import ConformanceError, check_modality

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory) -> Path:
    """The example third-party plugins, pip-installed into a directory of their own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(FIXTURES / "gramx-imu"), str(FIXTURES / "gramx-broken")],
        check=True, capture_output=True,
    )
    return target


@pytest.fixture
def host(site_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(site_dir))
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    plugins.reset()
    yield plugins.get_host()
    plugins.reset()


@pytest.fixture
def imu_csv(tmp_path) -> Path:
    path = tmp_path / "walk.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(40, 6)), delimiter=",")
    return path


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
    assert "broken-import" in info.value.hint and "gramx-smell" in info.value.hint


def test_conformance_kit_catches_a_wrong_output_shape(host, imu_csv):
    imu = gramx.get_modality("imu")
    bad = gramx.Modality(
        name="imu_bad", load=imu.load, config=imu.config,
        build_encoder=lambda cfg: __import__("torch").nn.Conv1d(6, 4, 3),  # [B, 4, T]: not [B, F]
    )
    with pytest.raises(ConformanceError, match=r"\[B=1, feature_dim\]"):
        check_modality(bad, [imu_csv])


def test_cli_plugins_list_json_in_a_fresh_process(site_dir):
    env = {**os.environ, "PYTHONPATH": str(site_dir)}
    env.pop(plugins.DISABLE_ENV, None)
    listing = subprocess.run([sys.executable, "-m", "gramx", "plugins", "list", "--json"],
                             env=env, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    rows = {row["plugin"]: row for row in json.loads(listing.stdout)}
    assert rows["imu"]["status"] == "ok" and rows["imu"]["modalities"] == ["imu"]
    assert rows["imu"]["distribution"] == "gramx-imu"
    assert rows["broken-hook"]["status"] == "error"


def test_cli_plugins_table_and_check(host, imu_csv, capsys):
    assert main(["plugins", "list"]) == 0
    table = capsys.readouterr().out
    assert "gramx-imu" in table and "ModuleNotFoundError" in table

    assert main(["plugins", "check", "imu", "--sample", str(imu_csv)]) == 0
    assert "imu: conforms" in capsys.readouterr().out

    assert main(["plugins", "check", "imu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gramx: error:") and "--sample" in err
    assert "Traceback" not in err
