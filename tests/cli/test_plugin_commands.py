"""The plugin commands (gramx.cli.plugin_commands): `gramx plugins list` and `gramx plugins check`."""

import json
import os
import subprocess
import sys

import pytest

from gramx.cli import main
from gramx.plugins import host as plugins


@pytest.mark.slow
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


def test_plugins_list_shows_each_modalitys_description(host, capsys):
    assert main(["plugins", "list"]) == 0
    assert "6-axis IMU windows from CSV" in capsys.readouterr().out
