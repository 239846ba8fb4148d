"""Shards from others: crafted, damaged or tampered shards cannot write, hang or mislead the reader.

The crafted shards are built here with :mod:`tarfile`; nothing binary is committed.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fixture_modalities import make_dataset, run_config

from gramx.cli import main
from gramx.train.config import parse_config
from gramx.data.loading import RowLoader
from gramx.data.manifest import DataError
from gramx.plugins.host import available_modalities
from gramx.data.shard_reader import ShardStream, read_shards
from gramx.data.shards import write_shards
from gramx.train.loop import train

VECTOR = io.BytesIO()
np.save(VECTOR, np.arange(8, dtype=np.float32))


def record(position: int = 0, **fields) -> dict:
    return {"index": position, "line": position + 1, "id": f"r{position}", "label": 0, "source": "train.jsonl",
            **fields}


def row(position: int = 0, **fields) -> list:
    """The entries of a good row with a vector file: its record (with ``fields``) and ``KEY.vector.npy``."""
    return [(f"{position:09d}.json", record(position, **fields)), (f"{position:09d}.vector.npy", VECTOR.getvalue())]


def member(name: str, data=b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    data = data if isinstance(data, bytes) else json.dumps(data).encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.type != tarfile.REGTYPE:
        info.size, data = 0, b""
    return info, data


def shard_folder(folder: Path, entries: list, rows: int = 1, columns: dict | None = None,
                 index: dict | None = None) -> Path:
    """A shard folder with one shard, 000000.tar, of ``entries`` ((name, data) pairs or TarInfo-data pairs)."""
    folder.mkdir(parents=True)
    with tarfile.open(folder / "000000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry[0], tarfile.TarInfo) else member(*entry)
            tar.addfile(info, io.BytesIO(data))
    shard = {"name": "000000.tar", "rows": rows, "columns": {"vector": rows} if columns is None else columns}
    index = {"format": "gramx-shards", "manifest": "train.jsonl", "rows": rows, "shard_size": rows,
             "shards": [shard], **(index or {})}
    (folder / "shards.json").write_text(json.dumps(index))
    return folder


def stream(folder: Path, workers: int = 0) -> list[dict]:
    """Every row of the shards, loaded as training loads them (one batch)."""
    shards = read_shards(folder)
    modalities = available_modalities()
    loader = RowLoader({"vector": (modalities["vector"], modalities["vector"].default_config())})
    return next(iter(ShardStream(shards, loader, [np.arange(len(shards))])))


def test_good_crafted_shards_are_read(tmp_path, fixture_plugins):
    """The builder below makes shards the reader takes: every refusal that follows is the one defect's."""
    items = stream(shard_folder(tmp_path / "shards", row(0) + row(1), rows=2))
    assert [item["error"] for item in items] == [None, None]
    assert items[1]["values"]["vector"].tolist() == list(range(8))


@pytest.mark.parametrize("escape", ["absolute", "relative"])
def test_a_shard_cannot_write_outside_the_temporary_folder(tmp_path, fixture_plugins, escape):
    """The row record's index named the temporary file: `/x/pwned` or `../../x/pwned` wrote `pwned.vector.npy` there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "pwned" if escape == "absolute" else "../" + os.path.relpath(outside / "pwned",
                                                                                  tempfile.gettempdir())
    folder = shard_folder(tmp_path / "shards", [("000000000.json", record(index=str(target))),
                                                ("000000000.vector.npy", b"import os  # a .pth file runs at start-up")])
    with pytest.raises(Exception) as caught:
        stream(folder)
    assert list(outside.iterdir()) == []  # before: [outside/pwned.vector.npy], then a ValueError
    assert isinstance(caught.value, DataError)
    assert "000000.tar:000000000.json: index: Input should be a valid integer" in str(caught.value)


@pytest.mark.parametrize("fields, problem", [
    ({"index": 1}, "index 1 where row 0 belongs"),
    ({"index": True}, "index: Input should be a valid integer"),
    ({"line": 0}, "line: Input should be greater than or equal to 1"),
    ({"line": "1"}, "line: Input should be a valid integer"),
    ({"id": 5}, "id: Input should be a valid string"),
    ({"label": [1]}, "label"),
    ({"label": False}, "label"),
    ({"source": "../../etc/passwd"}, "source: String should match pattern"),
    ({"source": None}, "source: Input should be a valid string"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_every_field_of_the_row_record_is_checked(tmp_path, fixture_plugins, fields, problem):
    folder = shard_folder(tmp_path / "shards", row(0, **fields))
    with pytest.raises(DataError, match=r"000000\.tar:000000000\.json: ") as caught:
        stream(folder)
    assert problem in str(caught.value) and "gramx shards" in caught.value.hint


@pytest.mark.parametrize("data, problem", [(b"\xff", "Invalid JSON"), (b"[1]", "Input should be an object"),
                                           (b"{" * 5000, "Invalid JSON")])
def test_a_row_record_that_is_not_an_object_is_refused(tmp_path, fixture_plugins, data, problem):
    folder = shard_folder(tmp_path / "shards", [("000000000.json", data), row(0)[1]])
    with pytest.raises(DataError, match=r"000000\.tar:000000000\.json: ") as caught:
        stream(folder)
    assert problem in str(caught.value)


@pytest.mark.parametrize("name", ["../000000000.vector.npy", "/tmp/000000000.vector.npy", "sub/000000000.vector.npy",
                                  "000000000.vector.npy/x", "000000000.vector.n y", "000000000.Vector.npy",
                                  "00000000.vector.npy", "000000000.vector.value.json.x"])
def test_entry_names_are_plain_names_with_a_modality_and_a_suffix(tmp_path, fixture_plugins, name):
    folder = shard_folder(tmp_path / "shards", [row(0)[0], (name, VECTOR.getvalue())])
    with pytest.raises(DataError, match="not an entry gramx writes") as caught:
        stream(folder)
    assert f"000000.tar:{name!r}" in str(caught.value)


@pytest.mark.parametrize("kind, attrs", [
    ("symbolic link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
    ("hard link", {"type": tarfile.LNKTYPE, "linkname": "000000000.json"}),
    ("folder", {"type": tarfile.DIRTYPE}),
    ("device", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 5}),
    ("pipe", {"type": tarfile.FIFOTYPE}),
])
def test_link_and_special_entries_are_refused_not_dropped(tmp_path, fixture_plugins, kind, attrs):
    """They were skipped: the row read back without its vector, as if the modality were absent."""
    folder = shard_folder(tmp_path / "shards", [row(0)[0], member("000000000.vector.npy", **attrs)])
    with pytest.raises(DataError, match=f"000000.tar:000000000.vector.npy: a {kind} entry; shards hold only regular"):
        stream(folder)


@pytest.mark.parametrize("change, problem", [
    ({"rows": 2}, "holds 1 rows"),  # the index promises more rows than the tar holds
    ({"columns": {}}, "holds 1 rows ({'vector': 1})"),  # a modality the index does not list
    ({"name": "../000000.tar"}, "name: String should match pattern"),
    ({"name": "/tmp/000000.tar"}, "name: String should match pattern"),
    ({"name": "sub/000000.tar"}, "name: String should match pattern"),
    ({"rows": "1"}, "rows: Input should be a valid integer"),
    ({"columns": {"vector": 2}}, "the row counts disagree"),
    ({"columns": {"../vector": 1}}, "String should match pattern"),
])
def test_shards_json_is_tamper_evident(tmp_path, fixture_plugins, change, problem):
    index = {"shards": [{"name": "000000.tar", "rows": 1, "columns": {"vector": 1}, **change}],
             "rows": change.get("rows") if isinstance(change.get("rows"), int) else 1}
    folder = shard_folder(tmp_path / "shards", row(0), index=index)
    with pytest.raises(DataError) as caught:
        stream(folder)
    assert problem in str(caught.value) and "gramx shards" in caught.value.hint
    assert str(folder) in str(caught.value)


def test_a_shard_with_more_rows_than_its_index_or_rows_out_of_order_is_refused(tmp_path, fixture_plugins):
    with pytest.raises(DataError, match="000000.tar:000000001: more rows than the 1 that shards.json lists"):
        stream(shard_folder(tmp_path / "more", row(0) + row(1)))
    with pytest.raises(DataError, match="000000.tar:000000002: row 1 belongs here"):
        stream(shard_folder(tmp_path / "gap", row(0) + row(2), rows=2))


@pytest.mark.parametrize("text", ["{not json", "[]", json.dumps({"format": "gramx-shards"})])
def test_a_malformed_shards_json_names_the_file(tmp_path, fixture_plugins, text):
    folder = shard_folder(tmp_path / "shards", row(0))
    (folder / "shards.json").write_text(text)
    with pytest.raises(DataError, match=r"shards\.json: not a shard index") as caught:
        read_shards(folder)
    assert "gramx shards" in caught.value.hint


def test_a_shard_that_links_out_of_its_folder_is_refused(tmp_path, fixture_plugins):
    folder = shard_folder(tmp_path / "shards", row(0))
    os.replace(folder / "000000.tar", tmp_path / "elsewhere.tar")
    (folder / "000000.tar").symlink_to(tmp_path / "elsewhere.tar")
    with pytest.raises(DataError, match="000000.tar: a link to .*elsewhere.tar, outside"):
        read_shards(folder)
    (folder / "000000.tar").unlink()
    os.mkfifo(folder / "000000.tar")  # never opened: it would block
    with pytest.raises(DataError, match="no shard 000000.tar"):
        read_shards(folder)


def damage(folder: Path, how: str) -> None:
    shard = folder / "000000.tar"
    if how == "no record":
        shard.unlink()
        with tarfile.open(shard, "w") as tar:
            info, data = member(*row(0)[1])
            tar.addfile(info, io.BytesIO(data))
    elif how == "garbage":
        shard.write_bytes(b"this is not a tar file\n" * 100)
    else:  # cut short inside an entry
        with tarfile.open(shard) as tar:
            end = tar.getmember("000000000.vector.npy").offset_data + 10
        shard.write_bytes(shard.read_bytes()[:end])


@pytest.mark.parametrize("how, problem", [
    ("no record", "000000.tar:000000000.json: missing (each row has one)"),
    ("garbage", "000000.tar: not a readable tar shard"),
    ("truncated", "000000.tar: cut short or damaged after 000000000.vector.npy (unexpected end of data)"),
])
def test_a_damaged_shard_names_the_file_the_entry_and_what_to_do(tmp_path, fixture_plugins, how, problem):
    folder = shard_folder(tmp_path / "shards", row(0))
    damage(folder, how)
    with pytest.raises(DataError) as caught:
        stream(folder)
    assert problem in str(caught.value) and "write them again from the manifest with `gramx shards" in caught.value.hint


@pytest.mark.slow
def test_a_worker_error_reaches_the_user_as_its_message_and_hint(tmp_path, fixture_plugins, capsys):
    """With DataLoader workers, a damaged shard was reported as a worker traceback flattened into one line."""
    manifest = make_dataset(tmp_path, n=24)
    write_shards(manifest, tmp_path / "shards", shard_size=6, progress=False)
    damage(tmp_path / "shards", "garbage")
    (tmp_path / "config").mkdir()
    config = run_config(tmp_path / "config", data={"train": str(tmp_path / "shards"), "workers": 2})
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "run.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gramx: error: {tmp_path / 'shards' / '000000.tar'}: not a readable tar shard")
    assert "hint: the shards are damaged" in err and "Traceback" not in err and "Caught" not in err
    config["output"]["dir"] = str(tmp_path / "run2")
    with pytest.raises(DataError) as caught:
        train(parse_config(config, tmp_path))
    assert "Traceback" not in str(caught.value) and "in _groups" not in str(caught.value)
    assert "in read" in str(caught.value.__cause__)  # the worker's traceback, shown with --debug


def test_mutated_shards_give_rows_or_an_error_naming_the_shard(tmp_path, fixture_plugins):
    """Seeded byte flips, cuts and record edits of a real shard: never another exception, never a hang."""
    manifest = make_dataset(tmp_path, n=3)
    write_shards(manifest, tmp_path / "shards", shard_size=3, progress=False)
    good = (tmp_path / "shards" / "000000.tar").read_bytes()
    used = len(good.rstrip(b"\0"))
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(300):
        data = bytearray(good)
        if trial % 3 == 0:
            data = data[:int(rng.integers(0, used))]
        else:
            for at in rng.integers(0, used, size=int(rng.integers(1, 4))):
                data[at] = int(rng.integers(0, 256))
        (tmp_path / "shards" / "000000.tar").write_bytes(bytes(data))
        try:
            items = stream(tmp_path / "shards")
            outcomes.add("rows")
            assert len(items) == 3
        except DataError as exc:
            outcomes.add("error")
            assert str(tmp_path / "shards") in str(exc) and exc.hint
    assert outcomes == {"rows", "error"}
