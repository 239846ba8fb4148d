"""Run configuration: validation errors, --set overrides, path resolution, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from fixture_modalities import run_config

import gramx
from gramx.cli import main
from gramx.train.config import config_schema, load_config, parse_config
from gramx.files.config_files import NameOrPath, apply_overrides
from gramx.errors import ConfigError, PluginError


def write(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_path_and_allowed_keys(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["optim"]["lrr"] = 0.1
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, data))
    msg = str(exc.value)
    assert "'optim.lrr'" in msg
    assert "allowed keys:" in msg and "lr, max_steps" in msg and "weight_decay" in msg
    assert "did you mean 'lr'" in msg


def test_unknown_top_level_section(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["optimiser"] = {"lr": 1}
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser'; allowed keys: data, device, dim, eval"):
        parse_config(data, tmp_path)


def test_unknown_head_key_inside_a_modality(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["modalities"]["vector"]["head"] = {"hiden": 4}
    with pytest.raises(ConfigError, match=r"'modalities.vector.head.hiden'; allowed keys: batch_norm, dropout, hidden, identity, in_dim"):
        parse_config(data, tmp_path)


def test_plugin_options_checked_by_the_plugin_config(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["modalities"]["vector"]["options"] = {"dimm": 4}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, tmp_path)
    assert "'modalities.vector.options.dimm'; allowed keys: delay, dim, freeze, hidden" in str(exc.value)
    data["modalities"]["vector"]["options"] = {"dim": "many"}
    with pytest.raises(ConfigError, match=r"modalities.vector.options.dim"):
        parse_config(data, tmp_path)


def test_plugin_defaults_are_filled_in(tmp_path, fixture_plugins):
    config = parse_config(run_config(tmp_path), tmp_path)
    assert config.modalities["vector"].options == {"dim": 8, "hidden": 16, "freeze": False, "delay": 0.0, "noise": 0.0}
    assert config.modalities["vector"].plugin_config.hidden == 16


def test_unknown_modality_lists_available(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["modalities"]["smell"] = {}
    with pytest.raises(PluginError, match="unknown modality 'smell'; available: point, text, vector"):
        parse_config(data, tmp_path)


def test_bad_values(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["device"] = "gpu"
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        parse_config(data, tmp_path)
    data = run_config(tmp_path)
    data["loss"] = {"anchor": "smell"}
    with pytest.raises(ConfigError, match="loss.anchor 'smell' is not one of"):
        parse_config(data, tmp_path)
    data = run_config(tmp_path)
    del data["data"]["train"]
    with pytest.raises(ConfigError, match="missing key 'data.train'"):
        parse_config(data, tmp_path)


def test_set_overrides_parse_yaml_scalars(tmp_path, fixture_plugins):
    path = write(tmp_path, run_config(tmp_path))
    config = load_config(path, ["optim.lr=3e-4", "data.workers=2", "loss.dam_weight=0.5",
                                "output.checkpoint_every=7", "optim.grad_clip=null", "device=cpu",
                                "modalities.vector.options.hidden=4"])
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.data.workers == 2 and config.loss.dam_weight == 0.5
    assert config.output.checkpoint_every == 7 and config.optim.grad_clip is None
    assert config.device == "cpu"
    assert config.modalities["vector"].plugin_config.hidden == 4
    with pytest.raises(ConfigError, match="'optim.lrate'"):
        load_config(path, ["optim.lrate=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["optim.lr"])


def test_apply_overrides_creates_sections():
    data = apply_overrides({}, ["a.b.c=1", "a.d=[1, 2]", "e=text"])
    assert data == {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": "text"}


def test_paths_resolve_against_the_config_folder(tmp_path, fixture_plugins, monkeypatch):
    data = run_config(tmp_path)
    data["data"]["train"] = "train.jsonl"
    data["eval"] = {"classes": "classes.txt"}
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    monkeypatch.chdir(sub)
    config = load_config(write(tmp_path, data))
    assert config.data.train == (tmp_path / "train.jsonl").resolve()
    assert config.eval.classes == (tmp_path / "classes.txt").resolve()


def test_one_rule_for_relative_paths_files_against_their_folder_command_line_against_cwd(
        tmp_path, fixture_plugins, monkeypatch):
    data = run_config(tmp_path)
    data["output"] = {"dir": "out/run"}  # written in the file: beside the file, wherever the process runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(tmp_path, data)
    config = load_config(path)
    assert config.output.dir == tmp_path / "out" / "run"
    config = load_config(path, ["output.dir=mine", "data.val=val.jsonl", "eval.classes=~/classes.txt"])
    assert config.output.dir == elsewhere / "mine"  # typed on the command line: the working folder
    assert config.data.val == elsewhere / "val.jsonl"
    assert config.eval.classes == Path.home() / "classes.txt"
    assert config.data.train == (tmp_path / "train.jsonl").resolve()


class PathOptions(BaseModel):
    """A plugin's options that hold a path and a name-or-path."""

    vocabulary: Path | None = None
    source: NameOrPath = "builtin"


class PathOptionsPlugin:
    @gramx.hookimpl
    def gramx_register_modalities(self, register):
        register(gramx.Modality(name="tagged", load=str, build_encoder=lambda cfg: None, config=PathOptions,
                                value_is_path=False))


def test_plugin_path_options_follow_the_same_rule(tmp_path, fixture_plugins, monkeypatch):
    fixture_plugins.register_plugin(PathOptionsPlugin(), name="path-options")
    data = run_config(tmp_path)
    (tmp_path / "encoders").mkdir()
    data["modalities"]["tagged"] = {"options": {"vocabulary": "words.txt", "source": "encoders"}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(tmp_path, data)
    options = load_config(path).modalities["tagged"].options
    assert options["vocabulary"] == str(tmp_path / "words.txt")  # written in the file: beside the file
    assert options["source"] == str(tmp_path / "encoders")  # a name or a path: exists beside the file
    options = load_config(path, ["modalities.tagged.options.vocabulary=mine.txt",
                                 "modalities.tagged.options.source=./typed"]).modalities["tagged"].options
    assert options["vocabulary"] == str(elsewhere / "mine.txt")  # typed on the command line: the working folder
    assert options["source"] == str(elsewhere / "typed")
    for name in ("org/model-id", "builtin"):  # names stay names
        data["modalities"]["tagged"]["options"] = {"source": name}
        assert load_config(write(tmp_path, data)).modalities["tagged"].options["source"] == name
        typed = load_config(path, [f"modalities.tagged.options.source={name}"])
        assert typed.modalities["tagged"].options["source"] == name


def test_a_bridge_file_resolves_every_path_against_its_folder(tmp_path, monkeypatch):
    from gramx.extend.grow import load_bridge_config

    folder = tmp_path / "bridges"
    (tmp_path / "elsewhere").mkdir()
    folder.mkdir()
    (folder / "b.yaml").write_text(yaml.safe_dump({"base": "../runs/a/model", "leaf": "runs/b/model",
                                                  "pools": {"text": "text.jsonl"}, "output": "out/model"}))
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_bridge_config(folder / "b.yaml", ["leaf=typed/model"])
    assert config.base == tmp_path / "runs" / "a" / "model"
    assert config.output == folder / "out" / "model" and config.pools["text"] == folder / "text.jsonl"
    assert config.leaf == tmp_path / "elsewhere" / "typed" / "model"  # --set: the working folder
    assert load_bridge_config(folder / "b.yaml").leaf == folder / "runs" / "b" / "model"


def test_config_errors_point_to_the_reference(tmp_path, fixture_plugins):
    data = run_config(tmp_path)
    data["optim"]["lrr"] = 0.1
    with pytest.raises(ConfigError) as exc:
        parse_config(data, tmp_path)
    assert "gramx config reference" in exc.value.hint and "schema" not in exc.value.hint


def test_invalid_yaml_names_the_line(tmp_path, fixture_plugins):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(path)


def test_schema_includes_plugin_options(fixture_plugins):
    schema = config_schema()
    assert {"modalities", "loss", "data", "optim", "eval", "output", "logging", "device"} <= set(schema["properties"])
    vector = schema["properties"]["modalities"]["properties"]["vector"]
    assert set(vector["properties"]["options"]["properties"]) == {"dim", "hidden", "freeze", "delay", "noise"}


def test_cli_config_schema_and_show(tmp_path, fixture_plugins, capsys):
    assert main(["config", "schema"]) == 0
    assert "RunConfig" in json.loads(capsys.readouterr().out)["title"]
    path = write(tmp_path, run_config(tmp_path))
    assert main(["config", "show", str(path), "--set", "optim.lr=0.5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 0.5 and shown["loss"]["type"] == "gram"
    assert shown["modalities"]["text"]["options"] == {"buckets": 64, "hidden": 16, "freeze": False}


def test_cli_config_error_is_one_line_with_hint(tmp_path, fixture_plugins, capsys):
    path = write(tmp_path, run_config(tmp_path))
    assert main(["config", "show", str(path), "--set", "optim.lrr=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("gramx: error:") and "'optim.lrr'" in err[0]
    assert err[1].startswith("hint:") and "Traceback" not in "".join(err)


@pytest.mark.parametrize("loss, score", [("gram", "volume"), ("pairwise_all", "cosine"), ("symile", "mip")])
def test_a_model_built_from_a_run_file_knows_its_score(tmp_path, fixture_plugins, loss, score):
    from gramx.train.config import build_model

    config = parse_config(run_config(tmp_path, loss={"type": loss}), tmp_path)
    assert config.loss_type.score == score
    assert build_model(config).score == score and config.as_model_config().score == score
