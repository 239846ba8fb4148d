"""One segment of an index: a row table in SQLite beside memory-mapped vectors, written in committed batches.

A segment is a folder (``part-000000``) holding a contiguous run of the index's rows::

    rows.sqlite   table rows(position, id, line, label, shown): each row by its position
                  (indexed by id too); table meta: the segment's plan and progress
    NAME.vec      the vectors of modality NAME, [rows, dim] little-endian in the index's
                  dtype (float32, float16, or bfloat16 bits), a zero row where it is absent
    NAME.has      one byte per row: 1 where the row has a NAME vector

SQLite keeps the row table because it opens in constant time, looks rows up by position
and id without reading the rest, and its transactions give a resumable writer its commit
points: a batch's vectors are written and flushed first, then its rows and the writer's
position in its source are committed in one transaction. A writer killed at any moment
leaves committed rows whose vectors are on disk, and perhaps vector bytes past them, which
the next writer cuts off (:class:`SegmentWriter` reopens and continues). The vectors live
in flat files so a reader streams them in chunks (``pread`` into a buffer of its own, so
the page cache, not the process, holds what was read), never reading them whole.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gramx.embed.embedding import Embeddings
from gramx.errors import GramxError
from gramx.index.record import DTYPES

__all__ = ["ROWS_NAME", "SegmentWriter", "committed_rows", "Segment"]

ROWS_NAME = "rows.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (position INTEGER PRIMARY KEY, id TEXT NOT NULL, line INTEGER, label TEXT,
                                 shown TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_by_id ON rows (id);
"""


def _bits(vectors: torch.Tensor, dtype: str) -> bytes:
    """``vectors`` (float32) as the bytes of the storage dtype."""
    if dtype == "bfloat16":
        return vectors.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    return vectors.numpy().astype(DTYPES[dtype][0]).tobytes()


class SegmentWriter:
    """Appends batches of embeddings to the segment at ``folder``, each batch committed; reopening continues.

    ``plan`` describes what the segment holds (its source, the rows of it, the modalities,
    ``dim`` and ``dtype``); a segment reopened with another plan is refused. :attr:`rows` is
    the number of rows committed, :attr:`next_row` the source row to embed next.
    """

    def __init__(self, folder: Path, plan: dict[str, Any]):
        self.folder, self.plan = folder, plan
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / ROWS_NAME)
        self.db.executescript(_SCHEMA)
        stored = {key: json.loads(value) for key, value in self.db.execute("SELECT key, value FROM meta")}
        if not stored:
            with self.db:
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in
                                                                       {**plan, "next": plan["first"]}.items()])
            stored = {**plan, "next": plan["first"]}
        differs = sorted(k for k in plan if stored.get(k) != plan[k])
        if differs:
            raise GramxError(f"{folder}: this unfinished segment was begun with other settings ({', '.join(differs)})",
                             hint="resume with the same command (the same manifest, model, dtype and number of "
                             "processes), or start again with --overwrite")
        self.next_row = stored["next"]
        self.rows = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM rows").fetchone()[0]
        self.row_bytes = plan["dim"] * DTYPES[plan["dtype"]][0].itemsize
        for name in plan["modalities"]:  # cut what a killed writer left past its last commit
            for suffix, size in ((".vec", self.row_bytes), (".has", 1)):
                path = folder / f"{name}{suffix}"
                with path.open("ab") as f:
                    f.truncate(self.rows * size)

    def add(self, batch: Embeddings, next_row: int) -> None:
        """Append ``batch`` (rows in source order), then commit it with ``next_row``, the source row after it."""
        for name in self.plan["modalities"]:
            present = batch.masks[name]
            vectors = torch.where(present[:, None], batch.feats[name].float(), 0.0)
            for suffix, data in ((".vec", _bits(vectors, self.plan["dtype"])),
                                 (".has", present.numpy().astype(np.uint8).tobytes())):
                with (self.folder / f"{name}{suffix}").open("ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        rows = [(self.rows + i, batch.ids[i], batch.lines[i], json.dumps(batch.labels[i]),
                 json.dumps({n: batch.values[n][i] for n in batch.values if batch.values[n][i] is not None}))
                for i in range(len(batch))]
        with self.db:
            self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?)", rows)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next'", (json.dumps(next_row),))
        self.rows += len(rows)
        self.next_row = next_row

    def close(self) -> None:
        self.db.close()


def committed_rows(folder: Path) -> int:
    """The rows committed to the segment at ``folder``."""
    with closing(sqlite3.connect(folder / ROWS_NAME)) as db:
        return db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM rows").fetchone()[0]


def _checked(path: Path, expected: int, hint: str) -> Path:
    """``path``, after checking that it holds ``expected`` bytes."""
    size = path.stat().st_size if path.is_file() else None
    if size != expected:
        found = "missing" if size is None else f"{size} bytes"
        raise GramxError(f"{path}: {found}, where index.json's rows need {expected}", hint=hint)
    return path


class Segment:
    """A complete segment, opened for reading: vectors read in row ranges, rows looked up in SQLite.

    ``rows`` is the number of rows ``index.json`` records; the files must agree with it.
    """

    def __init__(self, folder: Path, rows: int, modalities: list[str], dim: int, dtype: str, hint: str):
        self.folder, self.rows, self.dim, self.dtype = folder, rows, dim, dtype
        path = folder / ROWS_NAME
        if not path.is_file():
            raise GramxError(f"{path}: missing (the segment's rows)", hint=hint)
        try:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            stored = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0), COUNT(*) FROM rows").fetchone()
            self.meta = {key: json.loads(value) for key, value in self.db.execute("SELECT key, value FROM meta")}
        except (sqlite3.Error, ValueError) as exc:
            raise GramxError(f"{path}: not a readable row table ({exc})", hint=hint) from None
        if tuple(stored) != (rows, rows):
            raise GramxError(f"{path}: holds {stored[1]} rows, but index.json records {rows}", hint=hint)
        self.storage = DTYPES[dtype][0]
        self.files = {n: _checked(folder / f"{n}.vec", rows * dim * self.storage.itemsize, hint).open("rb")
                      for n in modalities}
        self.present = {n: np.fromfile(_checked(folder / f"{n}.has", rows, hint), dtype=np.uint8)
                        for n in modalities}

    def read(self, name: str, start: int, stop: int, out: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``start:stop`` of modality ``name``: ``(vectors [n, dim] float32, present [n] bool)``.

        ``out``: a contiguous float32 ``[n, dim]`` tensor to read the vectors into.
        """
        out = torch.empty(stop - start, self.dim) if out is None else out
        bits = out.numpy() if self.storage == np.float32 else np.empty((stop - start, self.dim), self.storage)
        row_bytes = self.dim * self.storage.itemsize
        done = os.preadv(self.files[name].fileno(), [memoryview(bits).cast("B")], start * row_bytes)
        if done != bits.nbytes:
            raise GramxError(f"{self.files[name].name}: shorter than when the index was opened (changed on disk?)",
                             hint="open the index again, or rebuild it")
        if self.storage != np.float32:
            half = torch.from_numpy(bits)
            out.copy_(half.view(torch.bfloat16) if self.dtype == "bfloat16" else half)
        return out, torch.from_numpy(self.present[name][start:stop].astype(bool))

    def describe(self, positions: list[int]) -> dict[int, tuple[str, Any, dict]]:
        """``position -> (id, label, shown values)`` of the rows at ``positions``."""
        found = {}
        for start in range(0, len(positions), 500):
            chunk = positions[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for position, rid, label, shown in self.db.execute(
                    f"SELECT position, id, label, shown FROM rows WHERE position IN ({marks})", chunk):
                found[position] = (rid, json.loads(label), json.loads(shown))
        return found

    def find(self, rid: str) -> int | None:
        """The position of the row with id ``rid``, or None."""
        row = self.db.execute("SELECT position FROM rows WHERE id = ?", (rid,)).fetchone()
        return None if row is None else row[0]
