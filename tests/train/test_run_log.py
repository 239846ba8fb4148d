"""The run log: the run folder's marker, metrics.jsonl records, a resumed run's log, TensorBoard scalars, the
training window."""

from __future__ import annotations

import json

import pytest

from gramx.files.atomic import check_output
from gramx.train.run_log import RUN, RunLog, TrainWindow
from gramx.version import __version__


def records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_run_folder_is_marked_and_records_are_appended_as_json_lines(tmp_path):
    out = tmp_path / "run"
    log = RunLog(out, tensorboard=False)
    marker = json.loads((out / RUN.marker).read_text())
    assert marker == {"format": "gramx-run", "format_version": 1, "gramx_version": __version__}
    assert check_output(out, RUN)  # gramx recognises the folder as its own, to replace it
    log.record({"step": 1, "loss": 2.5})
    log.record({"step": 2, "loss": 2.0, "lr": 1e-3})
    log.scalars("train", {"loss": 2.0}, 2)  # no TensorBoard: nothing to write
    log.close()
    assert records(out) == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0, "lr": 1e-3}]
    assert sorted(p.name for p in out.iterdir()) == ["gramx-run.json", "metrics.jsonl"]


def test_other_processes_write_nothing(tmp_path):
    log = RunLog(tmp_path / "run", enabled=False)
    log.record({"step": 1})
    log.scalars("train", {"loss": 1.0}, 1)
    log.close()
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_drops_the_records_after_its_checkpoint_and_appends(tmp_path):
    out = tmp_path / "run"
    first = RunLog(out, tensorboard=False)
    for step in (1, 2, 3, 4):  # killed after step 4; the checkpoint was written at step 2
        first.record({"step": step, "loss": float(step)})
    first.record({"step": 2, "val": {"tuples": 12}})
    resumed = RunLog(out, tensorboard=False, resume_step=2)
    assert [r["step"] for r in records(out)] == [1, 2, 2]
    resumed.record({"step": 3, "loss": 0.5})
    assert records(out)[-1] == {"step": 3, "loss": 0.5} and len(records(out)) == 4


def test_scalars_go_to_tensorboard_by_name(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path / "run")
    log.scalars("val/retrieval", {"R@1": 50.0, "R@5": 75.0}, 3)
    log.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["val/retrieval/R@1", "val/retrieval/R@5"]
    assert [(e.step, e.value) for e in events.Scalars("val/retrieval/R@5")] == [(3, 75.0)]


def test_the_training_window_sums_between_two_records():
    window = TrainWindow()
    window.add(2.0, {"contrastive": 1.5, "dam": 0.5}, samples=8, missed=set())
    window.add(1.0, {"contrastive": 1.0}, samples=8, missed={"dam"})
    assert (window.loss, window.batches, window.samples) == (3.0, 2, 16)
    assert window.parts == {"contrastive": 2.5, "dam": 0.5}
    assert window.computed == {"contrastive": 2, "dam": 1} and window.missed == {"dam": 1}
