"""Write the two tasks that need every modality at once, from the digits data (run from anywhere).

    python examples/compose/make_tasks.py

- ``composition/``: a recording of digit x, a photo of a hand signing digit y and the caption
  ``spoken {x}, signed {y}`` (digit words), x and y drawn independently; ``label`` is ``"x-y"``.
  Most candidates share one digit with a query, so matching one modality is not enough.
- ``modsum/``: the same pairs with the caption ``sum ends in {(x + y) mod 10}``: the caption says
  nothing about either modality alone (pairwise independent, as Symile's XOR task), so
  pairwise alignment cannot beat chance; ``label`` is the sum's last digit, ``classes.txt``
  names the ten captions for zero-shot classification of a pair.

Train tuples come from the digits train split, test tuples from the test split (never mixed):
1500 and 500 rows, seeded, paths relative to each manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "data" / "digits"
WORDS = (HERE.parent / "classes-digits.txt").read_text().split()
ROWS = {"train": 1500, "test": 500}
CAPTIONS = {
    "composition": (lambda x, y: f"spoken {WORDS[x]}, signed {WORDS[y]}", lambda x, y: f"{x}-{y}"),
    "modsum": (lambda x, y: f"sum ends in {WORDS[(x + y) % 10]}", lambda x, y: (x + y) % 10),
}


def files_by_digit(split: str, key: str) -> dict[int, list[str]]:
    """The split's distinct ``key`` files (audio or image) per digit, in manifest order."""
    groups: dict[int, list[str]] = {d: [] for d in range(10)}
    for line in (DIGITS / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get(key) and row[key] not in groups[row["label"]]:
            groups[row["label"]].append(row[key])
    return groups


def write_task(task: str, seed: int = 0) -> None:
    caption, label = CAPTIONS[task]
    folder = HERE / task
    folder.mkdir(exist_ok=True)
    for split, count in ROWS.items():
        rng = np.random.default_rng([seed, list(ROWS).index(split)])
        audio, image = files_by_digit(split, "audio"), files_by_digit(split, "image")
        rows = []
        for i in range(count):
            x, y = (int(v) for v in rng.integers(10, size=2))
            rows.append({
                "id": f"{task}-{split}-{i:04d}", "label": label(x, y), "text": caption(x, y),
                "audio": os.path.relpath(DIGITS / audio[x][rng.integers(len(audio[x]))], folder),
                "image": os.path.relpath(DIGITS / image[y][rng.integers(len(image[y]))], folder),
            })
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if task == "modsum":
        (folder / "classes.txt").write_text("".join(caption(d, 0) + "\n" for d in range(10)))


if __name__ == "__main__":
    for name in CAPTIONS:
        write_task(name)
        print(f"wrote {HERE / name}")
