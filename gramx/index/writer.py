"""Writing an index in batches: a new one, or rows appended to one, resumable after a kill, by many processes.

::

    with IndexWriter(folder, model) as writer:   # model: a GramxModel loaded from (or saved to) a folder
        writer.add(batch)                        # an Embeddings batch; any number of calls

A new index is written in a work folder beside its destination (``.NAME.partial``) and
moved into place when the block ends without error, replacing an index there (anything
else only with ``overwrite``). A writer with ``resume=True`` reopens that work folder after
a kill and continues where the last committed batch ended (:attr:`IndexWriter.next_row`
says which source row that is), so no row is embedded twice or missed. ``append=True`` adds
a segment to an existing index of the same model, committed by rewriting its
``index.json``. Under torchrun each process writes its own segment (``part``, ``parts``) of
the same work folder; when every process is done, :func:`finish_parts` (on one process)
commits them in order, so the index equals a single process's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from gramx.embed.embedding import Embeddings
from gramx.errors import GramxError
from gramx.files.atomic import OutputExists, check_output, move_into_place
from gramx.index.record import (
    DTYPES,
    INDEX,
    IndexedModel,
    IndexRecord,
    SegmentRecord,
    read_record,
    write_record,
)
from gramx.index.segment import SegmentWriter, committed_rows
from gramx.model.directory import fingerprint

if TYPE_CHECKING:
    from gramx.model.model import GramxModel

__all__ = ["work_folder", "IndexWriter", "finish_parts"]


def work_folder(folder: str | Path) -> Path:
    """Where a new index at ``folder`` is written until it is complete."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.partial"


def _indexed_model(model: GramxModel) -> IndexedModel:
    if model.source is None:
        raise GramxError("an index records the model that made it, and this model was never saved",
                         hint="save it first (model.save_pretrained(DIR)), or embed with gramx.load_model(DIR)")
    return IndexedModel(path=str(model.source), fingerprint=fingerprint(model.source), dim=model.dim,
                        score=model.score, modalities=model.names)


class IndexWriter:
    """Writes one segment of an index (see the module docstring).

    ``source`` names what the rows come from (a manifest or shard folder) and ``first``,
    ``stop`` which of its rows this writer embeds; a resumed writer must be given the same.
    ``modalities``: the model's modalities to index (default: all).
    """

    def __init__(self, folder: str | Path, model: GramxModel, overwrite: bool = False, *, dtype: str = "float32",
                 append: bool = False, resume: bool = False, part: int = 0, parts: int = 1,
                 source: str | Path | None = None, first: int = 0, stop: int | None = None,
                 modalities: list[str] | None = None):
        if dtype not in DTYPES:
            raise GramxError(f"unknown index dtype {dtype!r}", hint=f"one of {', '.join(DTYPES)}")
        self.folder, self.parts, self.append = Path(folder), parts, append
        self.model = _indexed_model(model)
        names = modalities or model.names
        self.record = IndexRecord(format="gramx-embeddings", format_version=2, model=self.model, dtype=dtype,
                                  modalities=names, segments=[])
        if append:
            self.record = self._base(dtype, names)
            self.root = self.folder
        else:
            self.root = self._work_folder(overwrite, resume, part)
        number = len(self.record.segments) + part
        plan = {"source": str(source) if source is not None else None, "first": first, "stop": stop,
                "modalities": names, "dim": model.dim, "dtype": dtype, "part": part, "parts": parts,
                "fingerprint": self.model.fingerprint}
        self.segment = SegmentWriter(self.root / f"part-{number:06d}", plan)
        self.name = self.segment.folder.name

    def _base(self, dtype: str, names: list[str]) -> IndexRecord:
        """The index rows are appended to: made by the same model, stored alike."""
        record = read_record(self.folder)
        if record.model.fingerprint != self.model.fingerprint:
            raise GramxError(f"{self.folder} was made by {record.model.path or 'another model'}, not by "
                             f"{self.model.path}; rows of both would not share a space",
                             hint="append with the model that made the index, or embed into a new index")
        if record.dtype != dtype or record.modalities != names:
            raise GramxError(f"{self.folder} stores {', '.join(record.modalities)} as {record.dtype}; this writer "
                             f"would add {', '.join(names)} as {dtype}", hint=f"append with --dtype {record.dtype}")
        return record

    def _work_folder(self, overwrite: bool, resume: bool, part: int) -> Path:
        check_output(self.folder, INDEX, overwrite)
        work = work_folder(self.folder)
        if work.exists() and not resume and part == 0:
            if not overwrite:
                raise OutputExists(f"{work} holds an unfinished embedding into {self.folder}",
                                   hint="continue it with --resume, or start again with --overwrite")
            shutil.rmtree(work)
        if resume and not work.is_dir():
            raise GramxError(f"there is no unfinished embedding into {self.folder} to resume ({work} is missing)",
                             hint="run the same command without --resume")
        work.mkdir(parents=True, exist_ok=True)
        return work

    @property
    def next_row(self) -> int:
        """The first source row not yet committed: where a resumed writer's source continues."""
        return self.segment.next_row

    @property
    def rows(self) -> int:
        """Rows committed to this segment."""
        return self.segment.rows

    def add(self, batch: Embeddings, next_row: int | None = None) -> None:
        """Commit ``batch``; ``next_row``: the source row after it (default: one past the rows added so far)."""
        missing = [n for n in self.record.modalities if n not in batch.feats]
        if missing:
            raise GramxError(f"the batch lacks the indexed modalities {', '.join(missing)}")
        self.segment.add(batch, self.next_row + len(batch) if next_row is None else next_row)

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.segment.close()
        if exc_type is not None or self.parts > 1:  # kept for a resume; parts are committed by finish_parts
            return
        self.record.segments.append(SegmentRecord(name=self.name, rows=self.rows))
        write_record(self.root, self.record)
        if not self.append:
            move_into_place(self.root, self.folder, INDEX, overwrite=True)  # checked on entering


def finish_parts(folder: str | Path, model: GramxModel, parts: int, dtype: str = "float32",
                 modalities: list[str] | None = None, append: bool = False) -> IndexRecord:
    """Commit the ``parts`` segments that the processes of a torchrun wrote (after all of them finished)."""
    folder = Path(folder)
    record = read_record(folder) if append else IndexRecord(
        format="gramx-embeddings", format_version=2, model=_indexed_model(model), dtype=dtype,
        modalities=modalities or model.names, segments=[])
    root = folder if append else work_folder(folder)
    for _ in range(parts):
        segment = root / f"part-{len(record.segments):06d}"
        record.segments.append(SegmentRecord(name=segment.name, rows=committed_rows(segment)))
    write_record(root, record)
    if not append:
        move_into_place(root, folder, INDEX, overwrite=True)
    return record
