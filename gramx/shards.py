"""Sharded training data: tar shards written from a manifest (``gramx shards``) and streamed back.

``gramx shards MANIFEST -o DIR --shard-size N`` writes, atomically (:mod:`gramx.atomic`)::

    DIR/shards.json      the folder's marker and index: rows and columns of every shard
    DIR/000000.tar ...   N rows each, in manifest order (webdataset layout)

Row ``i`` of the manifest is a group of tar entries with the key ``%09d % i``: ``KEY.json``
(its ``index``, manifest ``line``, ``id``, ``label`` and manifest name) and one entry per
present modality. A value that names a file (a string of a path-valued modality, see
:class:`gramx.modality.Modality`) becomes the file's bytes, ``KEY.<modality><suffix>``
(``000000042.audio.flac``); any other value (a caption, inline numbers, a structured value)
its JSON, ``KEY.<modality>.value.json``; paths inside a structured value are stored
absolute and keep pointing at their files. A missing modality has no entry, which reads
back as an absent value (presence mask false).

Reading: :class:`ShardStream` yields one process's micro-batches of an epoch (see
:mod:`gramx.training_data`). A file entry is written to a temporary file with its original
suffix, the path goes to the modality's ``load``, and the file is deleted right after:
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info
from webdataset import TarWriter
from webdataset.shardlists import expand_urls
from webdataset.tariterators import tarfile_samples

from gramx.atomic import Artefact, atomic_directory
from gramx.data import SKIP_HINT, DataError, ErrorLog, Manifest, Row, RowLoader, check_columns, read_manifest
from gramx.modality import Modality
from gramx.plugins import available_modalities
from gramx.progress import progress as progress_report

__all__ = ["SHARDS", "is_shards", "write_shards", "ShardSet", "read_shards", "read_rows", "ShardStream"]

#: A shard folder, recognised by its shards.json.
SHARDS = Artefact("gramx shard folder", "shards.json", "gramx-shards", ("*.tar",))
ROW_ENTRY = "json"
VALUE_ENTRY = ".value.json"
_U64 = 1 << 64


def is_shards(path: str | Path) -> bool:
    """Whether ``path`` names shards (a ``.tar`` file or pattern, or a shard folder) rather than a manifest."""
    path = Path(path)
    return path.suffix == ".tar" or (path.is_dir() and (path / SHARDS.marker).is_file())


def _entries(index: int, row: Row, source: Manifest, modalities: dict[str, Modality]) -> dict[str, Any]:
    record = {"index": index, "line": row.line, "id": row.id, "label": row.label, "source": source.path.name}
    sample: dict[str, Any] = {"__key__": f"{index:09d}", ROW_ENTRY: json.dumps(record).encode()}
    for name, value in row.values.items():
        if name not in modalities:
            continue
        value = modalities[name].resolve_value(value, source.root)
        if modalities[name].value_is_path and isinstance(value, str):
            try:
                sample[name + Path(value).suffix.lower()] = Path(value).read_bytes()
            except OSError as exc:
                raise DataError(source.row_error(row, name, f"{value}: {exc.strerror}"), hint=SKIP_HINT) from None
        else:
            sample[name + VALUE_ENTRY] = json.dumps(value).encode()
    return sample


def write_shards(manifest: str | Path, out: str | Path, shard_size: int, on_error: str = "raise",
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Write the rows of ``manifest`` into tar shards of ``shard_size`` rows in the folder ``out``.

    Columns that are installed modalities are written; the others are left out and listed
    in the result. A row whose file cannot be read raises a :class:`gramx.data.DataError`
    (``on_error="raise"``) or is left out and counted (``"skip"``). ``out`` must be free, a
    shard folder (replaced) or, with ``overwrite``, anything. Returns the index that
    ``shards.json`` holds plus ``left_out_columns`` and the ``errors`` (an ErrorLog).
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}")
    source = read_manifest(manifest)
    installed = available_modalities()
    modalities = {c: installed[c] for c in source.columns if c in installed}
    errors = ErrorLog()
    shards: list[dict] = []
    writer = None
    with atomic_directory(out, SHARDS, overwrite) as tmp:
        try:
            for index, row in enumerate(progress_report(source.rows, desc="shards", unit="row", disable=not progress)):
                try:
                    sample = _entries(index, row, source, modalities)
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
                shards[-1]["columns"].update(n for n in row.values if n in modalities)
        finally:
            if writer is not None:
                writer.close()
        index = {"format": SHARDS.format, "manifest": str(source.path), "rows": sum(s["rows"] for s in shards),
                 "shard_size": shard_size, "shards": [{**s, "columns": dict(sorted(s["columns"].items()))}
                                                      for s in shards]}
        (tmp / SHARDS.marker).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return {**index, "left_out_columns": [c for c in source.columns if c not in modalities], "errors": errors}


@dataclass
class ShardSet:
    """Shards to read: their files in order, the rows of each, and per modality the rows that have it."""

    path: Path
    files: list[Path]
    rows: list[int]
    present: dict[str, int]

    def __len__(self) -> int:
        return sum(self.rows)

    @property
    def columns(self) -> list[str]:
        return sorted(self.present)

    @property
    def starts(self) -> np.ndarray:
        """The flat row number (position in the files' concatenation) of each file's first row."""
        return np.cumsum([0, *self.rows])[:-1]

    def check_columns(self, names: Sequence[str]) -> list[str]:
        """See :func:`gramx.data.check_columns`."""
        return check_columns(self.path, self.columns, names)

    def values(self, name: str) -> list:
        """Every value stored as ``KEY.<name>.value.json`` (captions, say), read without reading the files.

        Only the tar headers are read on the way (each shard is opened for random access), so
        this costs a small fraction of a pass over the data; it feeds the feature cache of a
        frozen modality.
        """
        found = []
        for file in self.files:
            with tarfile.open(file) as tar:
                for member in tar:
                    if member.name.endswith(f".{name}{VALUE_ENTRY}"):
                        found.append(json.loads(tar.extractfile(member).read()))
        return found

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
    ``shards/{000000..000099}.tar`` of shards in one folder written by :func:`write_shards`."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not SHARDS.owns(folder):
        raise DataError(f"{path}: not shards written by gramx ({folder / SHARDS.marker} is missing)",
                        hint="write shards with `gramx shards MANIFEST -o DIR --shard-size N`")
    index = {s["name"]: s for s in json.loads((folder / SHARDS.marker).read_text(encoding="utf-8"))["shards"]}
    names = list(index) if path.is_dir() else [Path(url).name for url in expand_urls(str(path))]
    outside = [url for url in ([] if path.is_dir() else expand_urls(str(path))) if Path(url).parent != folder]
    missing = [n for n in names if n not in index or not (folder / n).is_file()]
    if outside or missing or not names:
        problem = f"names shards outside {folder}" if outside else f"no shard {(missing or ['at all'])[0]}"
        raise DataError(f"{path}: {problem}", hint=f"the shards of {folder} are listed in its {SHARDS.marker}")
    present: Counter = Counter()
    for name in names:
        present.update(index[name]["columns"])
    return ShardSet(path, [folder / n for n in names], [index[n]["rows"] for n in names], dict(present))


def read_rows(file: Path) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """The rows of one shard in file order: ``(row record, {entry suffix: bytes})``."""
    for sample in tarfile_samples([{"url": str(file)}]):
        entries = {k: v for k, v in sample.items() if not k.startswith("__")}
        yield json.loads(entries.pop(ROW_ENTRY)), entries


class ShardStream(IterableDataset):
    """One process's micro-batches, streamed from shards: yields each batch as a list of dataset items.

    ``batches`` holds each micro-batch as flat row numbers (see :meth:`ShardSet.epoch_order`);
    DataLoader worker ``w`` of ``W`` yields batches ``w, w + W, ...``, which is the order the
    DataLoader returns them in, so the batches do not depend on the number of workers. A
    worker reads each shard it needs once, keeping only its own rows of that shard.
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
                        rows = {i: row for i, row in enumerate(read_rows(self.shards.files[f])) if i in wanted[f]}
                        current = f
                    items.append(self._item(self.shards.files[f], *rows.pop(flat - int(starts[f])), Path(tmp)))
                yield items

    def _item(self, shard: Path, record: dict, entries: dict[str, bytes], tmp: Path) -> dict:
        values: dict[str, Any] = {}
        files: dict[str, str] = {}  # temporary path -> shard:entry, for messages
        for suffix, data in entries.items():
            name = suffix.split(".", 1)[0]
            if name not in self.loader.modalities:
                continue
            if suffix == name + VALUE_ENTRY:
                values[name] = json.loads(data)
                continue
            path = tmp / f"{record['index']}.{suffix}"
            path.write_bytes(data)
            values[name] = str(path)
            files[str(path)] = f"{shard.name}:{record['index']:09d}.{suffix}"

        def where(name: str, problem: str) -> str:
            for path, entry in files.items():
                problem = problem.replace(path, entry)
            return f"{record['source']} line {record['line']} ({name}): {problem}"

        try:
            return self.loader(record["index"], record["line"], values, where)
        finally:
            for path in files:
                os.unlink(path)
