"""Which file ``GET /media/ID/MODALITY`` may serve (:mod:`gramx.serve.media`): a row's own file, inside the
index's source folders, by row id and modality, never by path."""

from __future__ import annotations

import json

import pytest

from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex
from gramx.serve.media import SHARD_VALUE, NotServed, content_type, media_file, media_roots


@pytest.fixture(scope="module")
def index(digits_index):
    return EmbeddingIndex.load(digits_index.index)


def test_the_roots_are_the_source_folders_and_those_named(index, digits_index, tmp_path):
    source = digits_index.manifest.parent.resolve()
    assert media_roots(index) == [source]
    assert media_roots(index, [tmp_path]) == sorted([source, tmp_path.resolve()])
    with pytest.raises(GramxError, match="not a folder"):
        media_roots(index, [tmp_path / "nothing"])


def test_a_rows_file_is_found_by_id_and_modality(index, digits_index):
    row = json.loads(digits_index.manifest.read_text().splitlines()[0])
    found = media_file(index, media_roots(index), row["id"], "audio")
    assert found.path == (digits_index.manifest.parent / row["audio"]).resolve()
    assert found.content_type == content_type(row["audio"]) and found.offset == 0 and found.size is None


@pytest.mark.parametrize("rid, modality, message", [("nobody", "audio", "no row with id 'nobody'"),
                                                    (None, "depth", "the index has no modality depth")])
def test_what_the_index_does_not_hold_is_404(index, digits_index, rid, modality, message):
    rid = rid or json.loads(digits_index.manifest.read_text().splitlines()[0])["id"]
    with pytest.raises(NotServed, match=message) as refused:
        media_file(index, media_roots(index), rid, modality)
    assert refused.value.status == 404


def test_a_file_outside_the_roots_is_403(index, digits_index, tmp_path):
    row = json.loads(digits_index.manifest.read_text().splitlines()[0])
    with pytest.raises(NotServed, match="outside the folders") as refused:
        media_file(index, [tmp_path.resolve()], row["id"], "audio")
    assert refused.value.status == 403


def test_shard_values_name_a_tar_member_and_nothing_else():
    assert SHARD_VALUE.fullmatch("shard-000001.tar:000000004.audio.flac")["entry"] == "000000004.audio.flac"
    for value in ("../shard.tar:000000004.audio.flac", "shard.tar:../../etc/passwd", "a/shard.tar:000000004.x.y"):
        assert SHARD_VALUE.fullmatch(value) is None


def test_content_types_come_from_the_suffix():
    assert [content_type(n) for n in ("a.flac", "b.JPG", "c.mp4", "d.unknownsuffix")] == [
        "audio/flac", "image/jpeg", "video/mp4", "application/octet-stream"]
