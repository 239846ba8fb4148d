"""An index's ``index.json``: the model that made it, how its vectors are stored, and its segments.

An index folder holds ``index.json`` and one folder per segment (``part-000000``, ...; see
:mod:`gramx.index.segment`). The rows of the index are the segments' rows in order. A
segment is listed here only once it is complete, so ``index.json`` is the index's commit
record: it is replaced atomically when a segment is added (``gramx embed --append``), and
a reader never sees a segment in the making. Every field is checked on opening
(:func:`read_record`); an index of an older format is refused with the command that
rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from gramx.errors import GramxError
from gramx.files.atomic import Artefact
from gramx.files.config_files import read_json
from gramx.files.validation import MAX_WIDTH, Section, validate

__all__ = ["INDEX_NAME", "FORMAT", "INDEX", "DTYPES", "IndexedModel", "SegmentRecord", "IndexRecord",
           "rebuild_hint", "read_record", "write_record"]

INDEX_NAME = "index.json"
FORMAT = "gramx-embeddings"
#: An embedding index, recognised by its index.json; its segments are its folders.
INDEX = Artefact("gramx embedding index", INDEX_NAME, FORMAT, ("part-*/",))
#: Storage dtypes: name -> (numpy dtype of the stored bits, torch dtype they are read as).
DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "float32": (np.dtype("<f4"), torch.float32),
    "float16": (np.dtype("<f2"), torch.float16),
    "bfloat16": (np.dtype("<u2"), torch.bfloat16),
}
_SEGMENT = r"^part-[0-9]{6}$"


class _Record(Section):
    model_config = ConfigDict(strict=True)


class IndexedModel(_Record):
    """The model that made an index: only it may query the index."""

    path: str | None = None
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$", description="gramx.model.directory.fingerprint of the model")
    dim: int = Field(ge=2, le=MAX_WIDTH)
    score: str
    modalities: list[str]


class SegmentRecord(_Record):
    """One complete segment: its folder and its number of rows."""

    name: str = Field(pattern=_SEGMENT)
    rows: int = Field(ge=0)


class IndexRecord(_Record):
    """The contents of ``index.json``."""

    format: Literal["gramx-embeddings"]
    format_version: Literal[2]
    model: IndexedModel
    dtype: Literal["float32", "float16", "bfloat16"]
    modalities: list[str] = Field(min_length=1, description="the indexed modalities")
    segments: list[SegmentRecord]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)


def rebuild_hint(folder: Path, manifest: str = "MANIFEST") -> str:
    """The command that writes the index at ``folder`` again."""
    return (f"embed the manifest again with the model you search with: gramx embed MODEL {manifest} -o {folder} "
            "--overwrite")


def read_record(folder: Path) -> IndexRecord:
    """The validated ``index.json`` of the index at ``folder``; an older or unverifiable index is refused."""
    path = folder / INDEX_NAME
    if not path.is_file():
        raise GramxError(f"{folder} is not an embedding index (no {INDEX_NAME})",
                         hint="create one with: gramx embed MODEL MANIFEST -o FOLDER")
    raw = read_json(path, hint=rebuild_hint(folder))
    if isinstance(raw, dict) and raw.get("format") == FORMAT and raw.get("format_version") == 1:
        raise GramxError(f"{path}: an index of gramx's first format (every vector held in memory, no model check "
                         "for some), which this gramx no longer reads", hint=rebuild_hint(folder, raw.get("manifest")
                                                                                         or "MANIFEST"))
    made_by = raw.get("model") if isinstance(raw, dict) else None
    if isinstance(made_by, str) or (isinstance(made_by, dict) and made_by.get("fingerprint") is None):
        raise GramxError(f"{path}: the index does not record the fingerprint of the model that made it, so no query "
                         "can be checked to be in its space", hint=rebuild_hint(folder))
    record = validate(IndexRecord, raw, str(path), hint=rebuild_hint(folder))
    names = [s.name for s in record.segments]
    if len(set(names)) != len(names):
        raise GramxError(f"{path}: lists a segment twice", hint=rebuild_hint(folder))
    return record


def write_record(folder: Path, record: IndexRecord) -> None:
    """Replace ``index.json`` atomically (a reader sees the old record or the new one)."""
    tmp = folder / f".{INDEX_NAME}.tmp"
    tmp.write_text(record.model_dump_json(indent=1) + "\n", encoding="utf-8")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(folder / INDEX_NAME)
