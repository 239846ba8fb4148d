"""Per-sample randomness: each training row is loaded with generators seeded by (seed, epoch, row).

Random augmentation inside a modality's ``load`` (a random crop, a random frame) must not
depend on which DataLoader worker or process loads the row, nor on how many rows that worker
loaded before: otherwise a resumed run, which skips the rows already used, or a run with
another number of workers, draws other crops. During training the core therefore runs every
``load`` inside :func:`seeded`, with torch's (CPU), NumPy's and Python's global generators
seeded from :func:`sample_seed` ``(run seed, epoch, row index, modality)``, and puts them back
afterwards. A plugin needs no code for this: random augmentation in ``load`` that draws from
those global generators (``torch.randint``, ``np.random.rand``, ``random.random``) is
reproducible; a generator of its own (``np.random.default_rng()`` without a seed) is not.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["sample_seed", "seeded"]

_U64 = 1 << 64


def sample_seed(seed: int, epoch: int, index: int, name: str = "") -> int:
    """A 64-bit seed for modality ``name`` of row ``index`` in ``epoch`` of a run seeded with ``seed``.

    Each modality of a row has its own seed, so one modality's draws never depend on
    whether another was loaded (or taken from a cache) before it.
    """
    words = [seed % _U64, epoch, index, zlib.crc32(name.encode())]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU, NumPy's and Python's global generators seeded with ``seed``.

    Their previous states are restored on exit, so the caller's random streams (dropout in
    the training process, say) are not disturbed.
    """
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % (1 << 32))
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
