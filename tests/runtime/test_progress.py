"""Progress reports: a plain line per interval when stderr is not a terminal, nothing for short work."""

from __future__ import annotations

import io

from gramx.runtime import progress as progress_module
from gramx.runtime.progress import INTERVAL_ENV, LineProgress, progress


def test_a_line_per_update_at_interval_zero_with_the_count_percent_and_postfix():
    out = io.StringIO()
    bar = LineProgress(total=4, desc="embed", unit="rows", interval=0, file=out)
    bar.update(2)
    bar.set_postfix(loss=0.5)
    bar.update(2)
    bar.close()
    bar.close()  # closing twice prints once
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["embed: 2/4 rows (50%)", "embed: 4/4 rows (100%)",
                                                      "embed: 4/4 rows (100%)"]
    assert lines[1].endswith(", loss=0.5") and "\r" not in out.getvalue()


def test_work_shorter_than_an_interval_prints_nothing_and_iterating_passes_items_through():
    out = io.StringIO()
    assert list(LineProgress(range(5), desc="load", interval=3600, file=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue() == ""
    bar = LineProgress(iter(range(3)), interval=0, file=out)  # no length: a count without total
    assert bar.total is None and list(bar) == [0, 1, 2]
    assert out.getvalue().splitlines()[-1].startswith(": 3 it,")


def test_progress_gives_lines_off_a_terminal_and_honours_the_interval(monkeypatch):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setenv(INTERVAL_ENV, "7")
    report = progress(total=10, desc="train")
    assert isinstance(report, LineProgress) and report.interval == 7.0 and report.total == 10
    assert not isinstance(progress(total=10, disable=True), LineProgress)  # disabled: a silent tqdm
