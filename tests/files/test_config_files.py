"""Configuration files: YAML and JSON read with errors naming the file, --set overrides, the path rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from gramx.errors import ConfigError
from gramx.files.config_files import NameOrPath, apply_overrides, path_kind, read_json, read_yaml, resolve_paths


class Data(BaseModel):
    train: Path
    val: Path | None = None
    pools: dict[str, Path] = {}


class Run(BaseModel):
    data: Data
    encoder: NameOrPath = "openai/clip-vit-base-patch32"
    lr: float = 0.1


def test_overrides_set_nested_keys_with_yaml_values():
    data = {"optim": {"lr": 0.1}}
    apply_overrides(data, ["optim.lr=0.0003", "optim.betas=[0.9, 0.95]", "logging.every=10", "device="])
    assert data == {"optim": {"lr": 0.0003, "betas": [0.9, 0.95]}, "logging": {"every": 10}, "device": None}


@pytest.mark.parametrize("item, problem", [
    ("optim.lr", "expected KEY=VALUE"), ("optim..lr=1", "empty key segment"), ("lr=[1", "not valid YAML"),
    ("optim.lr.x=1", "'optim.lr' is not a section"),
])
def test_a_bad_override_names_itself(item, problem):
    with pytest.raises(ConfigError, match=f"--set {item!r}: .*{problem}".replace("[", r"\[")):
        apply_overrides({"optim": {"lr": 0.1}}, [item])


def test_paths_in_a_file_resolve_against_its_folder_and_typed_ones_against_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "models" / "clip").mkdir(parents=True)
    run = Run(data=Data(train="train.jsonl", pools={"a": "pool"}), encoder="models/clip")
    resolve_paths(run, tmp_path)
    assert run.data.train == tmp_path / "train.jsonl" and run.data.pools == {"a": tmp_path / "pool"}
    assert run.data.val is None and run.encoder == str(tmp_path / "models" / "clip")
    kept = Run(data=Data(train="/abs/train.jsonl"))
    resolve_paths(kept, tmp_path)  # a model id stays a name, an absolute path stays
    assert kept.encoder == "openai/clip-vit-base-patch32" and kept.data.train == Path("/abs/train.jsonl")

    monkeypatch.chdir(tmp_path / "models")
    data = {}
    apply_overrides(data, ["data.val=val.jsonl", "lr=0.5"], kind_of=lambda parts: path_kind(Run, parts))
    assert data == {"data": {"val": str(tmp_path / "models" / "val.jsonl")}, "lr": 0.5}


def test_path_kind_follows_nested_sections_and_mappings():
    assert path_kind(Run, ["data", "train"]) == "path" and path_kind(Run, ["data", "pools", "x"]) == "path"
    assert path_kind(Run, ["encoder"]) == "name_or_path"
    assert path_kind(Run, ["lr"]) is None and path_kind(Run, ["nothing", "here"]) is None


def test_yaml_files_read_or_name_the_file_and_line(tmp_path):
    (tmp_path / "run.yaml").write_text("dim: 8\noptim:\n  lr: 0.1\n")
    assert read_yaml(tmp_path / "run.yaml") == {"dim": 8, "optim": {"lr": 0.1}}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "bad.yaml").write_text("dim: 8\noptim: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: invalid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read config .*missing.yaml"):
        read_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("data, problem", [
    (b'{"a": 1,}', r"invalid JSON \(.*, line 1\)"), (b"\xff\xfe{}", "not UTF-8 text"),
    (b"[" * 100_000, r"invalid JSON \(nested too deeply\)"),
])
def test_json_files_read_or_name_the_file_and_the_problem(tmp_path, data, problem):
    (tmp_path / "good.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "good.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_bytes(data)
    with pytest.raises(ConfigError, match=f"bad.json: {problem}") as info:
        read_json(tmp_path / "bad.json", hint="write it again")
    assert info.value.hint == "write it again"
    with pytest.raises(ConfigError, match=r"missing.json: cannot read it"):
        read_json(tmp_path / "missing.json")
