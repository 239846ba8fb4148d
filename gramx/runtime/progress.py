"""Progress reports for long work: a live bar on a terminal, a line per interval anywhere else.

A tqdm bar redraws itself with carriage returns; written to a log file or a CI console it
becomes kilobytes of noise. :func:`progress` gives a tqdm bar when stderr is a terminal and
otherwise a :class:`LineProgress`, which prints one plain line at most every ``interval``
seconds (``GRAMX_PROGRESS_INTERVAL``, default 30) and one when the work ends (work shorter
than one interval prints nothing).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress", "LineProgress"]

INTERVAL_ENV = "GRAMX_PROGRESS_INTERVAL"


class LineProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``) printing a line per interval."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, interval: float = 30.0, file=None):
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.n = self.shown = initial
        self.postfix: dict[str, Any] = {}
        self.file = file or sys.stderr
        self.started = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def _print(self) -> None:
        self.last = now = time.monotonic()
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self.shown) / max(now - self.started, 1e-9) if self.n > self.shown else 0.0
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done} {self.unit}{percent}, {rate:.3g} {self.unit}/s{extra}", file=self.file, flush=True)

    def close(self) -> None:
        """Print the final line, unless the work ended within the first interval (nothing to report)."""
        if not self.closed:
            self.closed = True
            if time.monotonic() - self.started >= self.interval:
                self._print()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, leave: bool = True, disable: bool = False):
    """A progress report over ``iterable`` (or updated by hand up to ``total``); see the module docstring."""
    if not disable and not sys.stderr.isatty():
        interval = float(os.environ.get(INTERVAL_ENV, 30))
        return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, interval=interval)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=disable,
                dynamic_ncols=True)
