"""Other processes: under torchrun (two gloo processes) each embeds its share into one index and the searches
merge; an embedding process killed mid-way resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest
import torch
import torch.multiprocessing as mp
from fixture_ddp import cli_alone, cli_worker
from fixture_modalities import make_dataset

from gramx.cli import main
from gramx.index import EmbeddingIndex
from gramx.index.segment import ROWS_NAME, committed_rows
from gramx.index.writer import work_folder


@pytest.mark.slow
def test_two_processes_make_the_index_one_process_makes(trained, fixture_plugins, free_port, tmp_path):
    manifest = make_dataset(tmp_path, n=11, missing=True)
    model = str(trained.model)
    assert main(["embed", model, str(manifest), "-o", str(tmp_path / "one"), "--batch-size", "3"]) == 0
    mp.spawn(cli_worker, args=(2, free_port(), ["embed", model, str(manifest), "-o", str(tmp_path / "two"),
                                                "--batch-size", "3", "--device", "cpu"]), nprocs=2, join=True)
    one, two = EmbeddingIndex.load(tmp_path / "one"), EmbeddingIndex.load(tmp_path / "two")
    assert [s.rows for s in two.segments] == [6, 5] and len(one) == len(two) == 11
    assert one.describe(range(11)) == two.describe(range(11))
    for name in one.modalities:
        torch.testing.assert_close(torch.cat([s.read(name, 0, s.rows)[0] for s in two.segments]),
                                   one.segments[0].read(name, 0, 11)[0], rtol=0, atol=1e-6)

    queries = tmp_path / "q.txt"
    queries.write_text("the digit one\nthe digit three\n")
    search = ["search", model, "--index", str(tmp_path / "two"), "--query-file", str(queries), "-k", "4"]
    assert main([*search, "-o", str(tmp_path / "alone.jsonl")]) == 0
    mp.spawn(cli_worker, args=(2, free_port(), [*search, "-o", str(tmp_path / "merged.jsonl"), "--device", "cpu"]),
             nprocs=2, join=True)
    alone, merged = ([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
                     for name in ("alone", "merged"))
    assert [[h["id"] for h in r["hits"]] for r in merged] == [[h["id"] for h in r["hits"]] for r in alone]


def _committed(segment):
    try:
        return committed_rows(segment) if (segment / ROWS_NAME).exists() else 0
    except sqlite3.OperationalError:  # the writer holds the lock
        return 0


@pytest.mark.slow
def test_a_killed_embed_resumes_exactly(trained, fixture_plugins, tmp_path):
    manifest = make_dataset(tmp_path, n=150, missing=True)
    out, whole = tmp_path / "index", tmp_path / "whole"
    argv = ["embed", str(trained.model), str(manifest), "-o", str(out), "--batch-size", "1", "--device", "cpu"]
    child = mp.get_context("spawn").Process(target=cli_alone, args=(argv,))
    child.start()
    segment, deadline = work_folder(out) / "part-000000", time.monotonic() + 300
    while _committed(segment) < 10:
        assert child.is_alive() and time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)  # at whatever point of a batch it has reached
    child.join()
    killed_at = committed_rows(segment)
    assert not out.exists() and 10 <= killed_at < 150
    assert main([*argv, "--resume"]) == 0
    assert main([*argv[:3], "-o", str(whole), "--batch-size", "7", "--device", "cpu"]) == 0
    resumed, uninterrupted = EmbeddingIndex.load(out), EmbeddingIndex.load(whole)
    assert len(resumed) == len(uninterrupted) == 150
    assert resumed.describe(range(150)) == uninterrupted.describe(range(150))
    for name in resumed.modalities:
        for rows in (slice(0, killed_at), slice(killed_at, 150)):  # before and after the kill
            torch.testing.assert_close(resumed.segments[0].read(name, rows.start, rows.stop)[0],
                                       uninterrupted.segments[0].read(name, rows.start, rows.stop)[0], rtol=0, atol=1e-6)
