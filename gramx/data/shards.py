"""Sharded training data: the tar layout, and ``gramx shards``, which writes it from a manifest.

``gramx shards MANIFEST -o DIR --shard-size N`` writes, atomically (:mod:`gramx.files.atomic`)::

    DIR/shards.json      the folder's marker and index: rows and columns of every shard
    DIR/000000.tar ...   N rows each, in manifest order (webdataset layout)

The ``i``-th row written is a group of tar entries with the key ``%09d % i``: ``KEY.json``,
the row record (``index`` i, manifest ``line``, ``id``, ``label`` and manifest name
``source``), and one entry per present modality. A value that names a file (a string of a
path-valued modality, see :class:`gramx.plugins.modality.Modality`) becomes the file's bytes,
``KEY.<modality><suffix>`` (``000000042.audio.flac``); any other value (a caption, inline
numbers, a structured value) its JSON, ``KEY.<modality>.value.json``; paths inside a
structured value are stored absolute and keep pointing at their files. A missing modality
has no entry, which reads back as an absent value (presence mask false). A row that is
left out (``on_error="skip"``) takes no key: keys are the rows' positions in the shards.

Shards are made to be shared, so the writer copies only what the manifest is meant to hold:
regular files (a device or a pipe is refused without being opened for reading, and no more
than a file's size is read) inside the manifest's folder, unless ``allow_outside``
(``--allow-outside``) lets a manifest name files elsewhere (``/etc/passwd``,
``~/.ssh/id_rsa``). Reading them back, checked entry by entry: :mod:`gramx.data.shard_reader`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from webdataset import TarWriter

from gramx.files.atomic import Artefact, atomic_directory
from gramx.data.loading import ErrorLog
from gramx.data.manifest import SKIP_HINT, DataError, Manifest, Row, read_manifest
from gramx.plugins.modality import Modality
from gramx.plugins.host import available_modalities
from gramx.runtime.progress import progress as progress_report
from gramx.files.validation import format_validation_error

__all__ = ["SHARDS", "ENTRY", "REWRITE_HINT", "RowRecord", "check_record", "is_shards", "read_regular",
           "write_shards"]

#: A shard folder, recognised by its shards.json.
SHARDS = Artefact("gramx shard folder", "shards.json", "gramx-shards", ("*.tar",))
#: The name of every tar entry: ``KEY.json``, ``KEY.<modality>.value.json`` or ``KEY.<modality>[.<ext>]``.
ENTRY = re.compile(r"(?P<key>[0-9]{9,18})\.(?:json|(?P<name>[a-z][a-z0-9_]*)(?P<suffix>\.value\.json|\.[a-z0-9_+-]{1,32})?)")
VALUE_ENTRY = ".value.json"
REWRITE_HINT = ("the shards are damaged or were not written by gramx: write them again from the manifest with "
                "`gramx shards MANIFEST -o DIR`")


class RowRecord(BaseModel):
    """A row's ``KEY.json``: its position, manifest line, id, label and manifest file name."""

    model_config = ConfigDict(extra="forbid", strict=True)
    index: int = Field(ge=0)
    line: int = Field(ge=1)
    id: str
    label: str | int | float | None
    source: str = Field(pattern=r"^[^/\\\x00-\x1f\x7f]{1,255}$")


def check_record(data: bytes, index: int) -> tuple[RowRecord | None, str | None]:
    """``(record, None)`` for a valid row record of row ``index`` (JSON bytes), else ``(None, problem)``."""
    try:
        record = RowRecord.model_validate_json(data)
    except pydantic.ValidationError as exc:
        return None, format_validation_error(exc, RowRecord)[:300]
    if record.index != index:
        return None, f"index {record.index} where row {index} belongs"
    return record, None


def is_shards(path: str | Path) -> bool:
    """Whether ``path`` names shards (a ``.tar`` file or pattern, or a shard folder) rather than a manifest."""
    path = Path(path)
    return path.suffix == ".tar" or (path.is_dir() and (path / SHARDS.marker).is_file())


def read_regular(path: str | Path) -> bytes:
    """The bytes of the regular file ``path``, no more than its size when opened.

    Anything else (a device such as ``/dev/zero``, a pipe, a folder) raises an :class:`OSError`
    whose ``strerror`` says so; a pipe is never waited on.
    """
    if stat.S_ISREG(os.stat(path).st_mode):  # a device or a pipe is never opened...
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:  # ...nor waited on, if swapped in since
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode):
                return f.read(info.st_size)
    raise OSError(errno.EINVAL, "not a regular file (a device, a pipe or a folder)", str(path))


def _entries(index: int, row: Row, source: Manifest, modalities: dict[str, Modality],
             allow_outside: bool) -> dict[str, Any]:
    record = json.dumps({"index": index, "line": row.line, "id": row.id, "label": row.label,
                         "source": source.path.name}).encode()
    problem = check_record(record, index)[1]  # what the reader would refuse
    if problem:
        raise DataError(f"{source.path} line {row.line}: not a row gramx stores ({problem})",
                        hint="a label is a string, a number or null")
    sample: dict[str, Any] = {"__key__": f"{index:09d}", "json": record}
    for name, value in row.values.items():
        if name not in modalities:
            continue
        value = modalities[name].resolve_value(value, source.root)
        if not (modalities[name].value_is_path and isinstance(value, str)):
            sample[name + VALUE_ENTRY] = json.dumps(value).encode()
            continue
        entry = name + Path(value).suffix.lower()
        match = ENTRY.fullmatch(f"{index:09d}.{entry}")
        if match is None or match["name"] != name:  # a suffix such as ".n py" (or a modality "json" without one)
            raise DataError(source.row_error(row, name, f"{value}: its suffix cannot name a shard entry"),
                            hint="rename the file: a suffix of up to 32 letters, digits, '_', '+' or '-'")
        try:
            sample[entry] = read_regular(value)
        except OSError as exc:
            raise DataError(source.row_error(row, name, f"{value}: {exc.strerror}"), hint=SKIP_HINT) from None
        if not allow_outside and not Path(os.path.realpath(value)).is_relative_to(source.root):  # links resolved
            raise DataError(source.row_error(row, name, f"{value}: outside the manifest's folder {source.root}"),
                            hint="shards are made to be shared: move the file into the manifest's folder, or pass "
                            "--allow-outside (allow_outside=True) to copy files from anywhere")
    return sample


def write_shards(manifest: str | Path, out: str | Path, shard_size: int, on_error: str = "raise",
                 overwrite: bool = False, progress: bool = True, allow_outside: bool = False) -> dict:
    """Write the rows of ``manifest`` into tar shards of ``shard_size`` rows in the folder ``out``.

    Columns that are installed modalities are written; the others are left out and listed
    in the result. A row whose file cannot be read (missing, not a regular file, outside the
    manifest's folder without ``allow_outside``) raises a :class:`gramx.data.loading.DataError`
    (``on_error="raise"``) or is left out and counted (``"skip"``). ``out`` must be free, a
    shard folder (replaced) or, with ``overwrite``, anything; on any failure or interrupt
    nothing is left behind. Returns the index that ``shards.json`` holds plus
    ``left_out_columns`` and the ``errors`` (an ErrorLog).
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}")
    source = read_manifest(manifest)
    installed = available_modalities()
    modalities = {c: installed[c] for c in source.columns if c in installed}
    errors = ErrorLog()
    shards: list[dict] = []
    writer, written = None, 0
    with atomic_directory(out, SHARDS, overwrite) as tmp:
        try:
            for row in progress_report(source.rows, desc="shards", unit="row", disable=not progress):
                try:
                    sample = _entries(written, row, source, modalities, allow_outside)
                except DataError as exc:
                    if on_error == "raise":
                        raise
                    errors.add([(row.line, str(exc))])
                    continue
                if writer is None or shards[-1]["rows"] == shard_size:
                    if writer is not None:
                        writer.close()
                    shards.append({"name": f"{len(shards):06d}.tar", "rows": 0, "columns": Counter()})
                    writer = TarWriter(str(tmp / shards[-1]["name"]), encoder=False, mtime=0)
                writer.write(sample)
                shards[-1]["rows"] += 1
                written += 1
                shards[-1]["columns"].update(n for n in row.values if n in modalities)
        finally:
            if writer is not None:
                writer.close()
        index = {"format": SHARDS.format, "manifest": str(source.path), "rows": written,
                 "shard_size": shard_size, "shards": [{**s, "columns": dict(sorted(s["columns"].items()))}
                                                      for s in shards]}
        (tmp / SHARDS.marker).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return {**index, "left_out_columns": [c for c in source.columns if c not in modalities], "errors": errors}
