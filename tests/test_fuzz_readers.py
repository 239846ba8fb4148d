"""Fuzzing the readers of files from others: every outcome is a result or a GramxError naming the file.

Random and mutated manifests, shard row records, ``shards.json``, ``index.json`` and a model's
``config.json`` are thrown at the functions that read them. Each call must return, or raise a
:class:`gramx.errors.GramxError` whose message names the file (or its folder); never another
exception, never a hang (an alarm stops the test), and never a write: the folder the reader
looks at holds the same files afterwards.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gramx.data.manifest import read_manifest
from gramx.errors import GramxError
from gramx.index import EmbeddingIndex
from gramx.model.model import load_model
from gramx.data.shard_reader import read_shards
from gramx.data.shards import check_record

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])  # the fixture plugin stays the same

#: Any JSON value, a few levels deep.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@contextlib.contextmanager
def watched(folder: Path, seconds: int = 60):
    """Fail when the block runs past ``seconds`` or changes the files under ``folder``."""

    def listing() -> set[tuple[str, int]]:
        return {(str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if not p.is_symlink()}

    def timeout(signum, frame):
        raise AssertionError(f"a reader hung for {seconds} s")

    before = listing()
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert listing() == before, "a reader wrote into the folder it read"


def outcome(read, names: Path):
    """``read()``'s result, or None when it raised a GramxError that names ``names`` (a file or folder)."""
    try:
        result = read()
    except GramxError as exc:
        assert str(names) in f"{exc} {exc.hint or ''}", f"the error does not name {names}: {exc}"
        event(f"refused: {type(exc).__name__}")
        return None
    event("read")
    return result


def mutate(value, path: list, new):
    """A copy of the JSON ``value`` with the element at ``path`` (keys/indices, taken modulo) replaced by ``new``."""
    if not path or not isinstance(value, dict | list) or not value:
        return new
    if isinstance(value, dict):
        key = sorted(value)[hash(str(path[0])) % len(value)]
        return {**value, key: mutate(value[key], path[1:], new)}
    i = path[0] % len(value) if isinstance(path[0], int) else 0
    return [*value[:i], mutate(value[i], path[1:], new), *value[i + 1:]]


PATHS = st.lists(st.integers(0, 50) | st.text(max_size=4), max_size=5)


# --------------------------------------------------------------------------- manifests


@FUZZ
@given(records=st.lists(JSON, max_size=5), suffix=st.sampled_from([".jsonl", ".csv"]), noise=st.binary(max_size=40))
def test_random_manifests_are_read_or_refused_naming_the_file(records, suffix, noise):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rows{suffix}"
        text = "\n".join(json.dumps(r) for r in records).encode()
        path.write_bytes(noise + text if suffix == ".csv" else text + noise)
        with watched(Path(tmp)):
            manifest = outcome(lambda: read_manifest(path), path)
        if manifest is not None:
            assert len(manifest.rows) >= 1 and all(isinstance(r.id, str) for r in manifest.rows)


# --------------------------------------------------------------------------- shard rows and shard folders


@FUZZ
@given(data=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()), index=st.integers(0, 10**6))
def test_row_records_are_checked_never_raised_on(data, index):
    record, problem = check_record(data, index)
    assert (record is None) != (problem is None)
    if record is not None:
        assert record.index == index and "/" not in record.source


def copied(source: Path, tmp: str) -> Path:
    copy = Path(tmp) / source.name
    shutil.copytree(source, copy)
    return copy


def rewrite(file: Path, path: list, new, raw: bytes | None) -> None:
    """Replace one element of the JSON ``file`` by ``new``, or the whole file by ``raw`` bytes."""
    file.write_bytes(raw if raw is not None else json.dumps(mutate(json.loads(file.read_text()), path, new)).encode())


@FUZZ
@given(path=PATHS, new=JSON, raw=st.none() | st.binary(max_size=60))
def test_mutated_shard_folders_are_read_or_refused_naming_them(trained, fixture_plugins, path, new, raw):
    with tempfile.TemporaryDirectory() as tmp:
        shards = copied(trained.shards, tmp)
        rewrite(shards / "shards.json", path, new, raw)
        with watched(shards):
            found = outcome(lambda: read_shards(shards), shards)
            if found is not None:
                for f in range(len(found.files)):
                    outcome(lambda: list(found.read(f, {}, set(range(found.rows[f])))), shards)


# --------------------------------------------------------------------------- indexes and models


@FUZZ
@given(path=PATHS, new=JSON, raw=st.none() | st.binary(max_size=60), query=st.sampled_from(["vector", "text"]))
def test_mutated_indexes_are_searched_or_refused_naming_them(trained, fixture_plugins, path, new, raw, query):
    with tempfile.TemporaryDirectory() as tmp:
        index = copied(trained.index, tmp)
        rewrite(index / "index.json", path, new, raw)
        model = load_model(trained.model)
        value = "the digit two" if query == "text" else [0.1] * 8
        with watched(index):
            opened = outcome(lambda: EmbeddingIndex.load(index), index)
            if opened is not None:
                outcome(lambda: opened.query(model, value, query, k=3), index)


@FUZZ
@given(path=PATHS, new=JSON, raw=st.none() | st.binary(max_size=60))
def test_mutated_model_configs_are_loaded_or_refused_naming_them(trained, fixture_plugins, path, new, raw):
    with tempfile.TemporaryDirectory() as tmp:
        model = copied(trained.model, tmp)
        rewrite(model / "config.json", path, new, raw)
        with watched(model):
            loaded = outcome(lambda: load_model(model), model)
        if loaded is not None:
            assert all(torch.isfinite(p).all() for p in loaded.parameters())
