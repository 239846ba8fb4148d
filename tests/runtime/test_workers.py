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


class Failing(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise LoadError("clip-2.wav", "truncated header", hint="re-encode the file")
        return torch.zeros(2)


class FailingStream(IterableDataset):
    def __iter__(self):
        yield [torch.zeros(2)]
        raise ValueError("unexpected end of the tar\nat byte 512")


@pytest.mark.parametrize("dataset", [Failing(), FailingStream()], ids=["map-style", "iterable"])
@pytest.mark.slow
def test_a_worker_error_arrives_as_itself_with_the_worker_traceback_as_its_cause(dataset):
    options = {"batch_size": None} if isinstance(dataset, IterableDataset) else {"batch_size": 2}
    with pytest.raises(Exception) as info:
        list(WorkerLoader(dataset, collate_fn=torch.utils.data.default_collate, num_workers=1, **options))
    if isinstance(dataset, Failing):
        assert type(info.value) is LoadError and str(info.value) == "clip-2.wav: truncated header"
        assert info.value.hint == "re-encode the file"
    else:
        assert type(info.value) is ValueError and str(info.value) == "unexpected end of the tar\nat byte 512"
    cause = info.value.__cause__
    assert isinstance(cause, WorkerTraceback) and f"in {'__getitem__' if isinstance(dataset, Failing) else '__iter__'}" \
        in cause.text and "Caught" not in str(info.value)


@pytest.mark.slow
def test_an_unpicklable_worker_error_arrives_with_its_message():
    loader = WorkerLoader(Rows(bad=0, error=lambda: Unpicklable(1, 2)), collate_fn=torch.cat, batch_size=2,
                          num_workers=1)
    with pytest.raises(RuntimeError, match="^Unpicklable: 1 and 2$"):
        list(loader)
