"""Which file ``GET /media/ID/MODALITY`` may serve: a row's indexed file, only inside the index's source folders.

The index records what each segment was embedded from (a manifest or a shard folder,
:attr:`gramx.index.reader.EmbeddingIndex.sources`); its folders, and those the server is
told of (``--media DIR``), are the only places files are served from. A row's value is resolved (symbolic links followed) before the check, so
neither ``..`` in a manifest nor a link inside a source folder reaches out of it, and only
regular files are served (no device, pipe or folder). A row embedded from shards shows its
file as ``SHARD.tar:ENTRY``: the entry's bytes inside the shard are served, with byte
ranges like any file. A request never names a path: it names a row by its id and one of
the row's modalities.
"""

from __future__ import annotations

import mimetypes
import re
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex

__all__ = ["SHARD_VALUE", "NotServed", "MediaFile", "media_roots", "media_file", "content_type"]

#: How a row embedded from shards shows a file: ``SHARD.tar:ENTRY`` (:mod:`gramx.data.shard_reader`).
SHARD_VALUE = re.compile(r"(?P<shard>[^/\\:]+\.tar):(?P<entry>[0-9]{9,18}\.[a-z][a-z0-9_]*\.[a-z0-9_+-]{1,32})")


class NotServed(GramxError):
    """A media request refused: ``status`` is its HTTP status (404 nothing there, 403 not allowed)."""

    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class MediaFile:
    """A file that may be served, and its content type (from :mod:`mimetypes`); a file inside a shard
    is the ``size`` bytes at ``offset`` of the shard's tar file."""

    path: Path
    content_type: str
    offset: int = 0
    size: int | None = None


def media_roots(index: EmbeddingIndex, folders: Iterable[str | Path] = ()) -> list[Path]:
    """The folders files are served from: each source manifest's folder (or the shard folder itself),
    and ``folders`` (``gramx serve --media DIR``: a manifest whose absolute paths point elsewhere)."""
    for folder in folders:
        if not Path(folder).is_dir():
            raise GramxError(f"--media {folder}: not a folder", hint="name a folder that holds indexed files")
    roots = {(source if source.is_dir() else source.parent).resolve() for source in index.sources}
    return sorted(roots | {Path(folder).resolve() for folder in folders})


def media_file(index: EmbeddingIndex, roots: list[Path], rid: str, modality: str) -> MediaFile:
    """The file of row ``rid``'s ``modality``, checked to be a regular file inside ``roots``; else :class:`NotServed`."""
    if modality not in index.modalities:
        raise NotServed(404, f"the index has no modality {modality}", hint=f"indexed: {', '.join(index.modalities)}")
    found = index.find(rid)
    if found is None:
        raise NotServed(404, f"the index has no row with id {rid!r}")
    value = found[1].get(modality)
    if not isinstance(value, str):
        raise NotServed(404, f"row {rid!r} has no {modality} file")
    member = SHARD_VALUE.fullmatch(value)
    if member:
        return _shard_member(roots, rid, modality, member["shard"], member["entry"])
    path = _regular_file(Path(value), roots, rid, modality)
    return MediaFile(path, content_type(path.name))


def _regular_file(value: Path, roots: list[Path], rid: str, modality: str) -> Path:
    """``value`` resolved, checked to be a regular file inside ``roots``."""
    path = value.resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise NotServed(403, f"the {modality} file of row {rid!r} lies outside the folders the index was built from",
                        hint="only files inside " + ", ".join(map(str, roots)) + " are served")
    try:
        mode = path.stat().st_mode
    except OSError:
        raise NotServed(404, f"the {modality} file of row {rid!r} is missing (moved since it was indexed?)") from None
    if not stat.S_ISREG(mode):
        raise NotServed(403, f"the {modality} file of row {rid!r} is not a regular file")
    return path


def _shard_member(roots: list[Path], rid: str, modality: str, shard: str, entry: str) -> MediaFile:
    """The tar member ``entry`` of ``shard`` in the first root holding that shard, as a byte range of the tar."""
    folder = next((root for root in roots if (root / shard).is_file()), None)
    if folder is None:
        raise NotServed(404, f"the {modality} file of row {rid!r} is in {shard}, which no served folder holds")
    tar_path = _regular_file(folder / shard, roots, rid, modality)
    try:
        with tarfile.open(tar_path) as tar:
            info = tar.getmember(entry)
    except (KeyError, tarfile.TarError, OSError) as exc:
        raise NotServed(404, f"{tar_path}: no readable entry {entry} ({exc})") from None
    if not info.isreg():
        raise NotServed(403, f"{tar_path}:{entry} is not a regular file")
    return MediaFile(tar_path, content_type(entry), info.offset_data, info.size)


def content_type(name: str) -> str:
    """The content type of a file named ``name``, by its suffix."""
    return mimetypes.guess_type(Path(name).name)[0] or "application/octet-stream"
