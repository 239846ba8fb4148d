"""Write output folders safely: into a temporary sibling, renamed into place, never over what isn't ours.

Every gramx writer (model directories, embedding indexes, checkpoints, run folders, the demo
report) follows one rule: an existing path is replaced only when it is a gramx artefact of
the same kind, recognised by its marker file (a JSON file whose ``format`` names the kind),
that holds nothing but the files that kind writes (:attr:`Artefact.files`), and gramx says
so on stderr. Anything else (a plain file, a folder with other files, another kind of
artefact, an artefact holding the user's notes or another artefact) is refused with an
:class:`OutputExists` error naming what is there, unless the caller insists
(``overwrite=True``, the ``--overwrite`` option: the whole folder is replaced). Files get
the user's umask, like any tool's.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gramx.errors import GramxError

__all__ = ["Artefact", "OutputExists", "check_output", "remove", "apply_umask", "atomic_directory", "move_into_place"]

log = logging.getLogger("gramx")


class OutputExists(GramxError):
    """An output path holds something gramx may not replace."""


@dataclass(frozen=True)
class Artefact:
    """A kind of folder gramx writes, recognised by ``marker`` (JSON with ``"format": format``).

    ``files`` are the names, besides the marker, that the kind writes at its top level:
    ``fnmatch`` patterns of files, or of folders when they end with ``/``.
    """

    name: str
    marker: str
    format: str
    files: tuple[str, ...] = ()

    def owns(self, path: Path) -> bool:
        """Whether ``path`` is a folder of this kind."""
        try:
            return json.loads((path / self.marker).read_text(encoding="utf-8")).get("format") == self.format
        except (OSError, ValueError, AttributeError):
            return False

    def writes(self, entry: Path) -> bool:
        """Whether ``entry``, inside a folder of this kind, is a file or folder this kind writes there (never a link)."""
        if entry.is_symlink():
            return False
        if entry.is_dir():
            return any(p.endswith("/") and fnmatch.fnmatchcase(entry.name, p[:-1]) for p in self.files)
        return entry.is_file() and any(fnmatch.fnmatchcase(entry.name, p) for p in (self.marker, *self.files))

    def foreign(self, path: Path) -> list[str]:
        """The entries of the folder ``path`` this kind did not write (folders shown with a trailing ``/``)."""
        return sorted(p.name + "/" * (p.is_dir() and not p.is_symlink()) for p in path.iterdir() if not self.writes(p))


def _listed(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_output(path: str | Path, kind: Artefact, overwrite: bool = False) -> bool:
    """Whether writing ``kind`` at ``path`` replaces something; raises :class:`OutputExists` if it may not.

    Free to write: a missing path or an empty folder. Replaced with a notice: a folder of the
    same kind holding only what that kind writes. Refused unless ``overwrite``: anything else,
    such as the same kind of folder with the user's files or another artefact inside.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    folder = path.is_dir() and not path.is_symlink()
    ours = folder and kind.owns(path)
    foreign = kind.foreign(path) if ours else []
    if folder and (not any(path.iterdir()) or (ours and not foreign)):
        return True
    if overwrite:
        return True
    if not folder:
        raise OutputExists(f"{path} is a {'link' if path.is_symlink() else 'file'}, not a {kind.name}; gramx "
                           "does not replace it",
                           hint="choose another output path, or pass --overwrite (overwrite=True) to replace it")
    if ours:
        raise OutputExists(f"{path} is a {kind.name} that also holds what gramx did not write there "
                           f"({_listed(foreign)}); gramx does not replace it",
                           hint="move those out of it or choose another output path; --overwrite (overwrite=True) "
                           "replaces the whole folder, deleting them")
    names = sorted(p.name for p in path.iterdir())
    raise OutputExists(f"{path} holds files that are not a {kind.name} ({_listed(names)}); gramx does not replace it",
                       hint="choose another output path, or pass --overwrite (overwrite=True) to replace it")


def remove(path: Path) -> None:
    """Delete a file, link or folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions the user's umask asks for."""
    mask = os.umask(0)
    os.umask(mask)
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


class atomic_directory:
    """Context manager: write a ``kind`` folder into a temporary sibling, then move it to ``path``.

    The target is checked (:func:`check_output`) on entry and again just before the rename;
    a folder of the same kind is replaced, with a notice. A crash leaves either the old
    folder or the new one, never a half-written one.
    """

    def __init__(self, path: str | Path, kind: Artefact, overwrite: bool = False):
        self.path, self.kind, self.overwrite = Path(path), kind, overwrite

    def __enter__(self) -> Path:
        check_output(self.path, self.kind, self.overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        move_into_place(self.tmp, self.path, self.kind, self.overwrite)


def move_into_place(tmp: Path, path: Path, kind: Artefact, overwrite: bool = False) -> None:
    """Move the finished folder ``tmp`` (a sibling of ``path``) to ``path``: flushed, umask applied, checked again.

    A ``kind`` folder at ``path`` is replaced, with a notice; anything else only with
    ``overwrite``, else ``tmp`` is removed and :class:`OutputExists` raised.
    """
    for f in tmp.rglob("*"):  # flush file contents before the rename
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    apply_umask(tmp)
    try:
        replaces = check_output(path, kind, overwrite)
    except OutputExists:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if replaces:
        if path.is_dir() and any(path.iterdir()):
            log.warning("gramx: replacing %s with a new %s", path, kind.name)
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        remove(old)
