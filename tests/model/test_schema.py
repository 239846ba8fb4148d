"""The model's config.json schema: strict, every size bounded, a model directory's record round-trips."""

from __future__ import annotations

import pytest
from fixture_modalities import edit_model_config
from pydantic import ValidationError

from gramx.errors import GramxError
from gramx.files.validation import MAX_WIDTH
from gramx.model.directory import read_model_config
from gramx.model.model import load_model
from gramx.model.schema import HeadConfig, ModelConfig

SIZES = {
    "dim": lambda c: c.update(dim=10**15),
    "head width": lambda c: c["modalities"]["text"]["head"].update(hidden=10**15),
    "LoRA rank": lambda c: c["modalities"]["text"].update(lora={"r": 10**15}),
    "bridge width": lambda c: c["modalities"]["text"].update(
        bridge={"dim_in": 8, "dim_out": 8, "hidden": 10**15, "depth": 2}),
}


@pytest.mark.parametrize("size", SIZES)
def test_sizes_in_config_json_are_bounded_by_the_schema(saved, size):
    edit_model_config(saved, SIZES[size])
    with pytest.raises(GramxError, match=rf"config.json: .*less than or equal to {MAX_WIDTH}"):
        load_model(saved)


def test_a_saved_config_round_trips_and_records_the_score(saved):
    config = read_model_config(saved)
    assert config.format == "gramx-model" and config.dim == 8 and config.score == "volume"
    assert set(config.modalities) == {"vector", "point", "text"}
    assert ModelConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize("change, problem", [
    ({"format": "another-model"}, "format"),
    ({"format_version": 2}, "format_version"),
    ({"score": "dot"}, "score"),
    ({"dims": 8}, "dims"),  # a misspelt key is an error, never silently unused
])
def test_unknown_formats_scores_and_keys_are_refused(change, problem):
    with pytest.raises(ValidationError, match=problem):
        ModelConfig.model_validate({"dim": 8, "modalities": {}, **change})


@pytest.mark.parametrize("layer", [{"hidden": 16}, {"batch_norm": True}])
def test_an_identity_head_has_no_layers(layer):
    assert HeadConfig(identity=True).hidden == 0
    with pytest.raises(ValidationError, match="an identity head has no layers"):
        HeadConfig(identity=True, **layer)
