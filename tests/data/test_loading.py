"""Manifests (JSONL + CSV), path resolution, presence masks, raise / skip on bad rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from fixture_modalities import make_dataset

from gramx.data.loading import Collator, ErrorLog, ManifestDataset, check_errors
from gramx.data.manifest import DataError, read_manifest
from gramx.plugins.host import get_modality


def mods(*names):
    return {n: (get_modality(n), get_modality(n).default_config()) for n in names}


def batch_of(manifest, names=("vector", "point", "text")):
    m = mods(*names)
    dataset = ManifestDataset(manifest, m)
    return Collator(m)([dataset[i] for i in range(len(dataset))])


def test_jsonl_and_csv_manifests_give_the_same_batches(tmp_path, fixture_plugins):
    jsonl = make_dataset(tmp_path, n=6)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    rows[2]["point"] = None  # absent
    csv_path = tmp_path / "train.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "vector", "text"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r[k] for k in ("id", "label", "vector", "text")})
    a, b = read_manifest(jsonl), read_manifest(csv_path)
    assert [r.id for r in a.rows] == [r.id for r in b.rows]
    assert [r.label for r in b.rows] == [0, 1, 2, 3, 0, 1]  # integer labels from CSV cells
    assert [r.line for r in b.rows] == [2, 3, 4, 5, 6, 7]  # line 1 is the header
    ba, bb = batch_of(a, ("vector", "text")), batch_of(b, ("vector", "text"))
    assert torch.equal(ba["inputs"]["vector"], bb["inputs"]["vector"])
    assert torch.equal(ba["inputs"]["text"]["ids"], bb["inputs"]["text"]["ids"])


def test_missing_modalities_give_presence_masks(tmp_path, fixture_plugins):
    path = tmp_path / "m.jsonl"
    v = tmp_path / "v.npy"
    np.save(v, np.ones(8, dtype=np.float32))
    lines = [
        {"vector": "v.npy", "point": [0.0] * 8, "text": "a"},
        {"vector": "v.npy", "text": "b"},  # key missing
        {"vector": None, "point": [1.0] * 8, "text": "c"},  # null
        {"point": [2.0] * 8},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")  # a blank line is ignored
    batch = batch_of(read_manifest(path))
    assert batch["masks"]["vector"].tolist() == [True, True, False, False]
    assert batch["masks"]["point"].tolist() == [True, False, True, True]
    assert batch["masks"]["text"].tolist() == [True, True, True, False]
    assert batch["inputs"]["vector"].shape == (2, 8)  # only the present samples
    assert batch["inputs"]["point"][:, 0].tolist() == [0.0, 1.0, 2.0]
    assert batch["inputs"]["text"]["offsets"].tolist() == [0, 1, 2]


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path, fixture_plugins, monkeypatch):
    path = make_dataset(tmp_path / "data", n=2)
    monkeypatch.chdir(tmp_path)
    dataset = ManifestDataset(read_manifest(path), mods("vector"))
    assert dataset.value(dataset.manifest.rows[0], "vector") == str(tmp_path / "data" / "vec" / "train-0.npy")
    assert dataset[0]["error"] is None


def test_a_modality_resolves_the_paths_inside_its_values(tmp_path, fixture_plugins, monkeypatch):
    """Values that are not plain strings resolve by the modality's own rule (``Modality.resolve``)."""
    from fixture_modalities import VectorConfig, VectorEncoder, load_vector

    import gramx
    from gramx.plugins.modality import resolve_path

    windowed = gramx.Modality(
        name="windowed", load=lambda value, cfg: load_vector(value["file"], cfg) * value["scale"],
        build_encoder=VectorEncoder, config=VectorConfig,
        resolve=lambda value, root: {**value, "file": resolve_path(value["file"], root)},
    )
    make_dataset(tmp_path / "data", n=2)
    manifest = tmp_path / "data" / "windows.jsonl"
    manifest.write_text(json.dumps({"windowed": {"file": "vec/train-0.npy", "scale": 2}}) + "\n")
    monkeypatch.chdir(tmp_path)  # relative to the manifest's folder, not the working one
    dataset = ManifestDataset(read_manifest(manifest), {"windowed": (windowed, VectorConfig())})
    assert dataset.value(dataset.manifest.rows[0], "windowed")["file"] == str(tmp_path / "data" / "vec" / "train-0.npy")
    item = dataset[0]
    assert item["error"] is None
    expected = 2 * torch.from_numpy(np.load(tmp_path / "data" / "vec" / "train-0.npy"))
    assert torch.equal(item["values"]["windowed"], expected)
    # without a resolve rule a mapping value is passed through as it is
    plain = gramx.Modality(name="plain", load=lambda value, cfg: value, build_encoder=VectorEncoder, config=VectorConfig)
    assert plain.resolve_value({"file": "a.npy"}, tmp_path) == {"file": "a.npy"}
    assert plain.resolve_value("a.npy", tmp_path) == str(tmp_path / "a.npy")


def corrupt(tmp_path):
    path = make_dataset(tmp_path, n=6)
    (tmp_path / "vec" / "train-3.npy").write_bytes(b"not an array")
    return read_manifest(path)


def test_raise_on_a_corrupt_file_names_line_and_file(tmp_path, fixture_plugins):
    batch = batch_of(corrupt(tmp_path))
    with pytest.raises(DataError) as exc:
        check_errors(batch, "raise")
    assert "train.jsonl line 4 (vector)" in str(exc.value)
    assert str(tmp_path / "vec" / "train-3.npy") in str(exc.value)
    assert "on_error=skip" in exc.value.hint


def test_skip_a_corrupt_file_and_report_it(tmp_path, fixture_plugins):
    batch = batch_of(corrupt(tmp_path))
    log = ErrorLog()
    check_errors(batch, "skip", log)
    assert batch["index"].tolist() == [0, 1, 2, 4, 5]
    assert batch["inputs"]["vector"].shape[0] == 5
    assert log.count == 1 and "line 4" in log.summary()
    check_errors(batch, "skip", log)  # the same row in a later epoch is counted once
    assert log.count == 1
