"""Manifests: JSONL and CSV read into rows with ids, labels and values; every defect names the file and line."""

from __future__ import annotations

import pytest

from gramx.data.manifest import DataError, check_columns, count_rows, iter_rows, read_manifest


def test_bad_manifests(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match="bad.jsonl line 2: invalid JSON"):
        read_manifest(bad)
    other = tmp_path / "x.parquet"
    other.write_text("")
    with pytest.raises(DataError, match="unknown manifest format"):
        read_manifest(other)


def test_ids_default_to_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "a"}\n{"id": 7, "text": "b", "label": "cat"}\n')
    rows = read_manifest(path).rows
    assert [r.id for r in rows] == ["m:1", "7"] and rows[1].label == "cat" and rows[0].label is None


def test_jsonl_and_csv_give_the_same_rows_and_empty_values_are_absent(tmp_path):
    (tmp_path / "m.jsonl").write_text('\ufeff{"id": "a", "label": 1, "text": "x", "audio": ""}\n\n'
                                      '{"id": "b", "label": 2, "text": "y", "audio": "b.wav"}\n')
    (tmp_path / "m.csv").write_text("id,label,text,audio\na,1,x,\nb,2,y,b.wav\n")
    for name in ("m.jsonl", "m.csv"):
        manifest = read_manifest(tmp_path / name)
        assert [(r.id, r.label, r.values) for r in manifest.rows] == [
            ("a", 1, {"text": "x"}), ("b", 2, {"text": "y", "audio": "b.wav"})]
        assert manifest.columns == ["audio", "text"] and manifest.has_labels and manifest.root == tmp_path
    assert [r.line for r in read_manifest(tmp_path / "m.jsonl").rows] == [1, 3]  # blank lines skipped, counted
    assert count_rows(tmp_path / "m.csv") == 2 and [r.id for r in iter_rows(tmp_path / "m.csv")] == ["a", "b"]


@pytest.mark.parametrize("name, text, problem", [
    ("m.jsonl", "[1, 2]\n", "m.jsonl line 1: expected an object, got list"),
    ("m.jsonl", '{"label": [1, 2]}\n', "m.jsonl line 1: the label is a list"),
    ("m.csv", "text,text\na,b\n", "m.csv line 1: the header names the column 'text' twice"),
    ("m.csv", "text\na,b\n", "m.csv line 2: more cells than header columns"),
    ("m.csv", "", "m.csv: empty CSV manifest"),
    ("m.jsonl", "\n", "m.jsonl: the manifest has no rows"),
])
def test_a_defect_names_the_file_and_line(tmp_path, name, text, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=problem.replace("[", r"\[")):
        read_manifest(tmp_path / name)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    rows = iter_rows(tmp_path / "m.jsonl")
    assert next(rows).values == {"text": "a"}  # rows are read as they are used
    with pytest.raises(DataError, match="m.jsonl line 2: not UTF-8 text") as info:
        next(rows)
    assert "UTF-8" in info.value.hint


def test_a_modality_without_values_names_the_closest_column(tmp_path):
    assert check_columns(tmp_path, ["audio", "depth"], ["audio"]) == ["depth"]  # unused columns only warn
    assert check_columns(tmp_path, ["audio", "text", "txt"], ["audio", "text"]) == ["txt (did you mean 'text'?)"]
    with pytest.raises(DataError, match="no row has a value for the modality 'text'") as info:
        check_columns(tmp_path, ["audio", "txt"], ["audio", "text"])
    assert info.value.hint == "the manifest has a column 'txt': did you mean 'text'?"
    (tmp_path / "m.jsonl").write_text('{"text": "a"}\n')
    manifest = read_manifest(tmp_path / "m.jsonl")
    assert manifest.row_error(manifest.rows[0], "text", "bad value") == "m.jsonl line 1 (text): bad value"
