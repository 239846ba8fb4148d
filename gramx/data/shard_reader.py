"""Reading shards back without trusting them: shards.json and every tar entry checked, rows streamed to training.

:func:`read_shards` opens a shard folder (or a pattern of its shards) through its
``shards.json``, which must be a valid :class:`ShardIndex` naming plain ``.tar`` files of the
folder (not links out of it). :meth:`ShardSet.read` reads one shard with :mod:`tarfile`,
entry by entry, against the index: each entry a regular file (a link, folder, device or
sparse entry is refused, not skipped) named as :data:`gramx.data.shards.ENTRY` says, the keys the
rows' positions in order, one ``KEY.json`` per row whose fields have their types and whose
index is its position (:class:`gramx.data.shards.RowRecord`), and the rows and values of each
modality that the index lists. Anything else is a :class:`gramx.data.loading.DataError` naming
``shard:entry``, with a hint to write the shards again.

:class:`ShardStream` yields one process's micro-batches of an epoch (see
:mod:`gramx.train.training_data`). A file entry is written to a temporary file named from the row's
position, its modality and its checked suffix (``000000042.audio.flac``; no other string of
the shard), the path goes to the modality's ``load``, and the file is deleted right after:
plugins read paths from shards exactly as from a manifest and need no change (a file-like
object would break every plugin that takes a path; extracting whole shards would copy the
data set to disk). Messages about a bad entry name the manifest line and ``shard:entry``.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections import Counter
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls

from gramx.data.loading import RowLoader
from gramx.data.manifest import DataError, Row, check_columns
from gramx.data.shards import ENTRY, REWRITE_HINT, SHARDS, VALUE_ENTRY, RowRecord, check_record, read_regular
from gramx.files.validation import format_validation_error

__all__ = ["ShardIndex", "ShardSet", "StoredRow", "read_shards", "ShardStream"]

_U64 = 1 << 64
_KINDS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link", tarfile.DIRTYPE: "folder",
          tarfile.CHRTYPE: "device", tarfile.BLKTYPE: "device", tarfile.FIFOTYPE: "pipe"}


class ShardEntry(BaseModel):
    """One shard of a :class:`ShardIndex`: its file name, rows, and rows per modality."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.tar$")
    rows: int = Field(ge=1)
    columns: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], Annotated[int, Field(ge=0)]]


class ShardIndex(BaseModel):
    """A folder's ``shards.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    format: str
    manifest: str
    rows: int = Field(ge=0)
    shard_size: int = Field(ge=1)
    shards: list[ShardEntry]

    @model_validator(mode="after")
    def _consistent(self) -> ShardIndex:
        names = [s.name for s in self.shards]
        if self.format != SHARDS.format:
            raise ValueError(f"format {self.format!r} is not {SHARDS.format!r}")
        if len(set(names)) < len(names):
            raise ValueError("a shard is listed twice")
        if self.rows != sum(s.rows for s in self.shards) or any(max(s.columns.values(), default=0) > s.rows
                                                                   for s in self.shards):
            raise ValueError("the row counts disagree")
        return self


def _damaged(where: str | Path, problem: str) -> DataError:
    return DataError(f"{where}: {problem}", hint=REWRITE_HINT)


@dataclass
class StoredRow:
    """One row read back from a shard: its record, its files (modality -> (suffix, bytes)) and values."""

    record: RowRecord
    files: dict[str, tuple[str, bytes]]
    values: dict[str, Any]


def _groups(tar: tarfile.TarFile, file: Path) -> Iterator[tuple[str, list]]:
    """The tar's entries, each checked, grouped by key: ``(key, [(name match, member)])``."""
    key, group, last = "", [], "its start"
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, OSError) as exc:
            raise _damaged(file, f"cut short or damaged after {last} ({exc})") from None
        if member is None:
            break
        match = ENTRY.fullmatch(member.name)
        if match is None:
            raise _damaged(f"{file}:{member.name!r}", "not an entry gramx writes (KEY.json, "
                           "KEY.<modality>.value.json or KEY.<modality>.<extension>, no folders)")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
            raise _damaged(f"{file}:{member.name}", f"a {_KINDS.get(member.type, 'special')} entry; shards hold "
                           "only regular files")
        if group and match["key"] != key:
            yield key, group
            group = []
        key, last = match["key"], member.name
        group.append((match, member))
    if group:
        yield key, group


def _data(tar: tarfile.TarFile, file: Path, member: tarfile.TarInfo) -> bytes:
    try:
        return tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as exc:
        raise _damaged(f"{file}:{member.name}", f"cannot be read ({exc})") from None


def _row(tar: tarfile.TarFile, file: Path, index: int, group: list, names: Container[str] | None) -> StoredRow:
    record_entry = next(member for match, member in group if match["name"] is None)
    record, problem = check_record(_data(tar, file, record_entry), index)
    if problem:
        raise _damaged(f"{file}:{record_entry.name}", problem)
    files, values = {}, {}
    for match, member in group:
        name = match["name"]
        if name is None or (names is not None and name not in names):
            continue
        data = _data(tar, file, member)
        if match["suffix"] != VALUE_ENTRY:
            files[name] = (match["suffix"] or "", data)
            continue
        try:
            values[name] = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise _damaged(f"{file}:{member.name}", f"not JSON ({str(exc)[:100]})") from None
    return StoredRow(record, files, values)


@dataclass
class ShardSet:
    """Shards to read: their files in order, the rows of each, and per shard the rows that have each modality."""

    path: Path
    files: list[Path]
    rows: list[int]
    counts: list[dict[str, int]]

    def __len__(self) -> int:
        return sum(self.rows)

    @property
    def present(self) -> dict[str, int]:
        """Per modality, the rows that have it."""
        return dict(sum((Counter(c) for c in self.counts), Counter()))

    @property
    def columns(self) -> list[str]:
        return sorted(self.present)

    @property
    def starts(self) -> np.ndarray:
        """The flat row number (position in the files' concatenation) of each file's first row."""
        return np.cumsum([0, *self.rows])[:-1]

    def check_columns(self, names: Sequence[str]) -> list[str]:
        """See :func:`gramx.data.loading.check_columns`."""
        return check_columns(self.path, self.columns, names)

    def read(self, f: int, names: Container[str] | None = None, wanted: Container[int] | None = None,
             ) -> Iterator[StoredRow]:
        """The rows of shard ``f`` at the positions ``wanted`` (default all), holding the entries of the
        modalities ``names`` (default all); the whole shard is checked (see the module docstring)."""
        file = self.files[f]
        try:
            with tarfile.open(file, "r:") as tar:
                yield from self._rows(tar, f, names, wanted)
        except (tarfile.TarError, OSError) as exc:
            raise _damaged(file, f"not a readable tar shard ({exc})") from None

    def _rows(self, tar: tarfile.TarFile, f: int, names: Container[str] | None, wanted: Container[int] | None,
              ) -> Iterator[StoredRow]:
        file, first, found, count = self.files[f], int(self.starts[f]), Counter(), 0
        for count, (key, group) in enumerate(_groups(tar, file), start=1):
            index = first + count - 1
            if count > self.rows[f]:
                raise _damaged(f"{file}:{key}", f"more rows than the {self.rows[f]} that {SHARDS.marker} lists")
            if key != f"{index:09d}":
                raise _damaged(f"{file}:{key}", f"row {index} belongs here (rows missing, repeated or out of order)")
            entries = Counter(match["name"] for match, _ in group)
            if entries[None] != 1:
                raise _damaged(f"{file}:{key}.json", "missing (each row has one)" if not entries[None] else "repeated")
            twice = [name for name, n in entries.items() if n > 1]
            if twice:
                raise _damaged(f"{file}:{key}", f"two entries of the modality {twice[0]!r}")
            del entries[None]
            found.update(entries)
            if wanted is None or count - 1 in wanted:
                yield _row(tar, file, index, group, names)
        if count != self.rows[f] or found != Counter(self.counts[f]):
            raise _damaged(file, f"holds {count} rows ({dict(found)}), but {SHARDS.marker} lists {self.rows[f]} "
                           f"({self.counts[f]}): cut short or altered")

    def values(self, name: str) -> list:
        """Every value stored as ``KEY.<name>.value.json`` (captions, say), read without reading the files.

        Only the tar headers and the small entries are read on the way (each shard is opened for
        random access), so this costs a small fraction of a pass over the data; it feeds the
        feature cache of a frozen modality.
        """
        return [row.values[name] for f in range(len(self.files)) for row in self.read(f, {name})
                if name in row.values]

    def epoch_order(self, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """Flat row numbers in the reading order of ``epoch``.

        Shuffled: the shards in a random order and the rows of each shard shuffled (seeded by
        ``(seed, epoch)`` and ``(seed, epoch, shard)``), so a reader holds one shard at a
        time; rows of different shards never share a batch unless it straddles them. Write
        the shards from a shuffled manifest when its rows are sorted (by class, by source).
        """
        starts = self.starts
        files = np.arange(len(self.files))
        if shuffle:
            files = np.random.default_rng([seed % _U64, epoch]).permutation(files)
        parts = []
        for f in files.tolist():
            rows = np.arange(self.rows[f])
            if shuffle:
                rows = np.random.default_rng([seed % _U64, epoch, f]).permutation(rows)
            parts.append(starts[f] + rows)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def read_shards(path: str | Path) -> ShardSet:
    """The shards ``path`` names: a shard folder (all of its shards) or a pattern such as
    ``shards/{000000..000099}.tar`` of shards in one folder written by :func:`gramx.data.shards.write_shards`."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    marker = folder / SHARDS.marker
    try:
        index = ShardIndex.model_validate_json(read_regular(marker))
    except FileNotFoundError:
        raise DataError(f"{path}: not shards written by gramx ({marker} is missing)",
                        hint="write shards with `gramx shards MANIFEST -o DIR --shard-size N`") from None
    except OSError as exc:
        raise _damaged(marker, exc.strerror) from None
    except pydantic.ValidationError as exc:
        raise _damaged(marker, f"not a shard index: {format_validation_error(exc, ShardIndex)[:300]}") from None
    listed = {s.name: s for s in index.shards}
    urls = [] if path.is_dir() else expand_urls(str(path))
    names = list(listed) if path.is_dir() else [Path(url).name for url in urls]
    outside = [url for url in urls if Path(url).parent != folder]
    missing = [n for n in names if n not in listed or not (folder / n).is_file()]
    if outside or missing or not names:
        problem = f"names shards outside {folder}" if outside else f"no shard {(missing or ['at all'])[0]}"
        raise DataError(f"{path}: {problem}", hint=f"the shards of {folder} are listed in its {SHARDS.marker}")
    for name in names:
        if Path(os.path.realpath(folder / name)).parent != folder.resolve():
            raise _damaged(folder / name, f"a link to {os.path.realpath(folder / name)}, outside {folder}")
    return ShardSet(path, [folder / n for n in names], [listed[n].rows for n in names],
                    [listed[n].columns for n in names])


class ShardStream(IterableDataset):
    """One process's micro-batches, streamed from shards: yields each batch as a list of dataset items.

    ``batches`` holds each micro-batch as flat row numbers (see :meth:`ShardSet.epoch_order`);
    DataLoader worker ``w`` of ``W`` yields batches ``w, w + W, ...``, which is the order the
    DataLoader returns them in, so the batches do not depend on the number of workers. A
    worker reads each shard it needs once, keeping only its own rows of that shard. Read it
    through a :class:`gramx.runtime.workers.WorkerLoader` so that an error in a worker reaches the
    caller whole.
    """

    def __init__(self, shards: ShardSet, loader: RowLoader, batches: list[np.ndarray]):
        self.shards, self.loader, self.batches = shards, loader, batches

    def __iter__(self) -> Iterator[list[dict]]:
        info = get_worker_info()
        mine = self.batches[info.id::info.num_workers] if info is not None else self.batches
        starts = self.shards.starts
        wanted: dict[int, set[int]] = {}
        for flat in (int(x) for batch in mine for x in batch):
            f = int(np.searchsorted(starts, flat, side="right")) - 1
            wanted.setdefault(f, set()).add(flat - int(starts[f]))
        current, rows = -1, {}
        with tempfile.TemporaryDirectory(prefix="gramx-shard-") as tmp:
            for batch in mine:
                items = []
                for flat in (int(x) for x in batch):
                    f = int(np.searchsorted(starts, flat, side="right")) - 1
                    if f != current:
                        rows = {row.record.index: row for row in self.shards.read(f, self.loader.modalities, wanted[f])}
                        current = f
                    items.append(self._item(self.shards.files[f], rows.pop(flat), flat, Path(tmp)))
                yield items

    def _item(self, shard: Path, row: StoredRow, flat: int, tmp: Path) -> dict:
        values: dict[str, Any] = dict(row.values)
        files: dict[str, str] = {}  # temporary path -> shard:entry, for messages
        try:
            for name, (suffix, data) in row.files.items():
                entry = f"{flat:09d}.{name}{suffix}"  # a position, a modality, a checked suffix: a plain name
                (tmp / entry).write_bytes(data)
                values[name] = str(tmp / entry)
                files[str(tmp / entry)] = f"{shard.name}:{entry}"

            def where(name: str, problem: str) -> str:
                for path, entry in files.items():
                    problem = problem.replace(path, entry)
                return f"{row.record.source} line {row.record.line} ({name}): {problem}"

            shown = {name: files.get(value, value) if isinstance(value, str) else value  # a file by its shard:entry
                     for name, value in values.items()}
            about = Row(row.record.line, row.record.id, row.record.label, shown)
            return self.loader(flat, row.record.line, values, where, about)
        finally:
            for path in files:
                os.unlink(path)
