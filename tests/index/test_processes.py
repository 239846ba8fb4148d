"""Under torchrun (two gloo processes here): each embeds its share into one index, and the searches merge."""

from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp
from fixture_ddp import cli_worker
from fixture_modalities import make_dataset

from gramx.cli import main
from gramx.index import EmbeddingIndex


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
