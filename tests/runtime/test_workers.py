"""DataLoader workers: an exception raised in a worker reaches the caller as itself, with the worker's traceback."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from gramx.errors import GramxError, LoadError
from gramx.runtime.workers import WorkerFailure, WorkerLoader, WorkerTraceback


class Unpicklable(Exception):
    def __init__(self, a, b):  # pickling rebuilds it from (message,): it cannot cross processes as itself
        super().__init__(f"{a} and {b}")


class UnpicklableGramxError(GramxError):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}", hint="fix both")


class Rows(Dataset):
    def __init__(self, bad: int, error=lambda: LoadError("row.npy", "truncated", hint="write it again")):
        self.bad, self.error = bad, error

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == self.bad:
            raise self.error()
        return torch.tensor([index])


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.tensor([0])
        raise LoadError("shard.tar", "cut short")


def test_a_failure_keeps_a_picklable_exception_and_replaces_another():
    error = LoadError("row.npy", "truncated", hint="write it again")
    failure = WorkerFailure.of(error)
    assert failure.error is error and "LoadError: row.npy: truncated" in failure.trace
    with pytest.raises(LoadError) as info:
        failure.reraise()
    assert isinstance(info.value.__cause__, WorkerTraceback) and info.value.__cause__.text == failure.trace
    replaced = WorkerFailure.of(Unpicklable(1, 2)).error
    assert type(replaced) is RuntimeError and str(replaced) == "Unpicklable: 1 and 2"
    replaced = WorkerFailure.of(UnpicklableGramxError(1, 2)).error  # a user error keeps its message and hint
    assert type(replaced) is GramxError and str(replaced) == "1 and 2" and replaced.hint == "fix both"


def test_without_workers_it_is_a_plain_dataloader():
    batches = list(WorkerLoader(Rows(bad=-1), collate_fn=torch.cat, batch_size=2))
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]]
    with pytest.raises(LoadError, match="row.npy: truncated"):
        list(WorkerLoader(Rows(bad=2), collate_fn=torch.cat, batch_size=2))


@pytest.mark.slow
@pytest.mark.parametrize("dataset, error", [(Rows(bad=2), "row.npy: truncated"), (Stream(), "shard.tar: cut short")])
def test_a_workers_error_is_raised_as_itself_with_its_hint(dataset, error):
    loader = WorkerLoader(dataset, collate_fn=torch.cat, batch_size=2 if isinstance(dataset, Rows) else 1,
                          num_workers=1)
    with pytest.raises(LoadError) as info:
        list(loader)
    assert str(info.value) == error and "Caught" not in str(info.value)
    assert isinstance(info.value.__cause__, WorkerTraceback)


@pytest.mark.slow
def test_an_unpicklable_worker_error_arrives_with_its_message():
    loader = WorkerLoader(Rows(bad=0, error=lambda: Unpicklable(1, 2)), collate_fn=torch.cat, batch_size=2,
                          num_workers=1)
    with pytest.raises(RuntimeError, match="^Unpicklable: 1 and 2$"):
        list(loader)
