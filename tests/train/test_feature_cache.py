"""The training feature cache: a frozen modality encoded once per distinct value, preloaded samples, failing
values named by their manifest line, shards caching only values that are not files."""

from __future__ import annotations

import pytest
import torch
from fixture_modalities import TEXT, VECTOR, run_config

from gramx.data.loading import cache_key
from gramx.data.manifest import DataError
from gramx.data.shards import write_shards
from gramx.errors import ConfigError
from gramx.train.config import build_model, parse_config
from gramx.train.feature_cache import prepare_training_inputs
from gramx.train.training_data import read_training_rows

CAPTIONS = ["the digit zero", "the digit one", "the digit two", "the digit three"]


@pytest.fixture
def prepare(tmp_path, fixture_plugins):
    """``prepare(modalities, train=None, **data)``: the model and what :func:`prepare_training_inputs` gives.

    ``modalities`` maps a modality to its run entry; the encoders record how many rows they encode.
    """
    base = run_config(tmp_path)

    def prepare_(modalities, train=None, **data):
        data = {**base["data"], **data, **({"train": str(train)} if train is not None else {})}
        config = parse_config({**base, "modalities": modalities, "data": data}, tmp_path)
        model = build_model(config)
        model.encoded = {name: 0 for name in model.names}
        for name, encoder in model.encoders.items():
            encoder.register_forward_hook(lambda module, args, out, name=name: model.encoded.__setitem__(
                name, model.encoded[name] + len(out)))
        return model, prepare_training_inputs(model, read_training_rows(config.data.train), config,
                                              torch.device("cpu"))

    return prepare_


FROZEN = {"options": {"freeze": True}}


def test_a_frozen_modality_is_encoded_once_per_distinct_value(prepare, tmp_path):
    model, (cache, preloaded, failed) = prepare({"text": FROZEN, "vector": FROZEN, "point": {}})
    assert set(cache.tables) == {"text", "vector"} and preloaded == {}
    assert model.encoded == {"text": 4, "vector": 24, "point": 0}  # 4 captions in 24 rows (some without)
    assert cache.tables["text"].shape == (4, 16) and failed == {"text": {}, "vector": {}}

    values = [CAPTIONS[2], CAPTIONS[0], CAPTIONS[2]]
    looked_up = cache.lookup({"text": values, "vector": None, "point": torch.zeros(3, 8)})
    assert set(looked_up) == {"text"}  # the modalities whose batch holds raw values
    cfg = TEXT.default_config()
    with torch.no_grad():
        expected = model.encode("text", TEXT.make_batch([TEXT.load(v, cfg) for v in values], cfg))
    torch.testing.assert_close(looked_up["text"], expected)


@pytest.mark.parametrize("entry", [{"options": {"freeze": True}, "cache": False}, {}], ids=["cache off", "trainable"])
def test_only_frozen_modalities_with_the_cache_on_are_cached(prepare, entry):
    model, (cache, _, _) = prepare({"text": entry, "vector": {}})
    assert cache.tables == {} and model.encoded == {"text": 0, "vector": 0}


def test_preloaded_samples_are_loaded_once_per_distinct_value(prepare, tmp_path):
    model, (cache, preloaded, failed) = prepare({"vector": {"preload": True}, "point": {"preload": True}, "text": {}})
    assert cache.tables == {} and set(preloaded) == {"vector", "point"} and model.encoded["vector"] == 0
    assert len(preloaded["vector"]) == 24 and len(preloaded["point"]) == 19  # five rows have no point
    path = str((tmp_path / "vec" / "train-7.npy").resolve())
    assert torch.equal(preloaded["vector"][cache_key(path)], VECTOR.load(path, VECTOR.default_config()))
    assert failed == {"vector": {}, "point": {}}


@pytest.mark.parametrize("entry", [FROZEN, {"preload": True}], ids=["cached", "preloaded"])
def test_a_failing_value_is_raised_naming_its_line_or_kept_as_failed(prepare, tmp_path, entry):
    (tmp_path / "vec" / "train-5.npy").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"train.jsonl line 6 \(vector\): .*train-5.npy") as info:
        prepare({"vector": entry, "text": {}}, on_error="raise")
    assert "on_error" in info.value.hint
    _, (cache, preloaded, failed) = prepare({"vector": entry, "text": {}}, on_error="skip")
    broken = cache_key(str((tmp_path / "vec" / "train-5.npy").resolve()))
    assert list(failed["vector"]) == [broken] and "train-5.npy" in failed["vector"][broken]
    kept = cache.index.get("vector") or preloaded["vector"]
    assert len(kept) == 23 and broken not in kept


def test_shards_cache_only_values_that_are_not_files(prepare, tmp_path):
    shards = write_shards(tmp_path / "train.jsonl", tmp_path / "shards", shard_size=5, progress=False)
    model, (cache, _, _) = prepare({"text": FROZEN, "vector": FROZEN}, train=tmp_path / "shards")
    assert set(cache.tables) == {"text"} and model.encoded == {"text": 4, "vector": 0}
    assert shards["rows"] == 24
    with pytest.raises(ConfigError, match="modalities.vector.preload: shards are streamed") as info:
        prepare({"text": {}, "vector": {"preload": True}}, train=tmp_path / "shards")
    assert "train from the manifest" in info.value.hint
