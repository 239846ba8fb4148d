"""Which file ``GET /media/ID/MODALITY`` may serve: a row's indexed file, only inside the index's source folders.

The index records what each segment was embedded from (a manifest or a shard folder,
:attr:`gramx.index.reader.EmbeddingIndex.sources`); its folders, and those the server is
told of (``--media DIR``), are the only places files are served from. A row's value is resolved (symbolic links followed) before the check, so
neither ``..`` in a manifest nor a link inside a source folder reaches out of it, and only
regular files are served (no device, pipe or folder). A request never names a path: it names
a row by its id and one of the row's modalities.
"""

from __future__ import annotations

import mimetypes
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex

__all__ = ["NotServed", "MediaFile", "media_roots", "media_file", "content_type"]


class NotServed(GramxError):
    """A media request refused: ``status`` is its HTTP status (404 nothing there, 403 not allowed)."""

    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class MediaFile:
    """A file that may be served, and its content type (from :mod:`mimetypes`)."""

    path: Path
    content_type: str


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
    path = Path(value).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise NotServed(403, f"the {modality} file of row {rid!r} lies outside the folders the index was built from",
                        hint="only files inside " + ", ".join(map(str, roots)) + " are served")
    try:
        mode = path.stat().st_mode
    except OSError:
        raise NotServed(404, f"the {modality} file of row {rid!r} is missing (moved since it was indexed?)") from None
    if not stat.S_ISREG(mode):
        raise NotServed(403, f"the {modality} file of row {rid!r} is not a regular file")
    return MediaFile(path, content_type(path.name))


def content_type(name: str) -> str:
    """The content type of a file named ``name``, by its suffix."""
    return mimetypes.guess_type(Path(name).name)[0] or "application/octet-stream"
