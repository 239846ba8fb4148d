"""The configuration reference: every key of a run file, of each modality's options and of a bridge file."""

from __future__ import annotations

import subprocess
import sys
import types
import typing
from pathlib import Path

import pydantic
import pytest
from fixture_modalities import TEXT, VECTOR

from gramx.cli.reference import render
from gramx.extend.grow import BridgeConfig
from gramx.train.config import RunConfig, RunModality

ROOT = Path(__file__).resolve().parents[2]


def sections(text: str) -> dict[str, dict[str, list[str]]]:
    """``### title`` -> key -> its row's cells (type, default, description)."""
    found: dict = {}
    for block in text.split("\n### ")[1:]:
        title, *lines = block.splitlines()
        rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines if line.startswith("| `")]
        found[title] = {row[0].strip("`"): row[1:] for row in rows}
    return found


def expected(model: type[pydantic.BaseModel], title: str) -> dict[str, set[str]]:
    """The sections ``model`` should give: ``title`` -> its field names, and those of its (optional) sections."""
    out = {title: set(model.model_fields)}
    for name, field in model.model_fields.items():
        options = typing.get_args(field.annotation) if typing.get_origin(field.annotation) in (
            typing.Union, types.UnionType) else (field.annotation,)
        for sub in options:
            if isinstance(sub, type) and issubclass(sub, pydantic.BaseModel):
                out |= expected(sub, name if title.endswith(" file") else f"{title}.{name}")
    return out


def test_the_reference_lists_every_key_of_run_and_bridge_files():
    found = sections(render({}))
    wanted = expected(RunConfig, "run file") | expected(RunModality, "modalities.NAME") | \
        expected(BridgeConfig, "bridge file")
    assert {"loss", "data", "optim", "modalities.NAME.head", "bridge file", "projector"} <= set(wanted)
    assert {title: set(keys) for title, keys in found.items()} == wanted
    assert found["data"]["train"][:2] == ["Path", "**required**"]
    assert found["data"]["batch_size"][:2] == ["int", "`32`"]
    assert found["optim"]["lr"][1] == "`0.001`"


def test_each_modality_has_its_options_with_defaults_and_description():
    text = render({"vector": VECTOR, "text": TEXT})
    found = sections(text)
    assert text.index("### text: test text (hashed words)") < text.index("### vector: test vectors (.npy)")
    assert set(found["vector: test vectors (.npy)"]) == set(VECTOR.config.model_fields)
    assert found["vector: test vectors (.npy)"]["dim"][:2] == ["int", "`8`"]
    assert found["text: test text (hashed words)"]["buckets"][:2] == ["int", "`64`"]


@pytest.mark.slow
def test_config_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
