"""The run file's `loss` section: defaults that train GRAM, strict keys, bounded options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gramx.files.validation import MAX_WIDTH
from gramx.losses.config import LossConfig


def test_the_defaults_are_the_gram_loss_anchored_on_text_with_a_learnt_temperature():
    cfg = LossConfig()
    assert (cfg.type, cfg.anchor, cfg.temperature, cfg.learn_temperature) == ("gram", "text", 0.07, True)
    assert cfg.pairwise_weight is None and cfg.cosine_weight is None and cfg.dam_weight is None and not cfg.local


@pytest.mark.parametrize("fields, problem", [
    ({"temperature": 0}, "temperature"), ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"negatives": "all"}, "negatives"), ({"fused_weight": 1.5}, "fused_weight"),
    ({"fusion_hidden": MAX_WIDTH + 1}, "fusion_hidden"), ({"gate_dim": 0}, "gate_dim"),
    ({"pairwise_warmup": 0}, "pairwise_warmup"), ({"anchors": "text"}, "anchors"),
])
def test_out_of_range_values_and_unknown_keys_are_refused(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        LossConfig(**fields)


def test_any_type_name_is_accepted_here_for_plugins_to_register():
    """The section takes any name; the run file checks it against the table and the installed plugins."""
    assert LossConfig(type="my_plugins_loss").type == "my_plugins_loss"
