"""Join UCI handwritten digit glyphs (bundled with scikit-learn) to a labelled manifest.

``python -m gramx_glyph.data IN.jsonl OUT.jsonl --split train`` writes one ``.npy`` glyph per
row of ``IN.jsonl`` (chosen by the row's ``label``) into ``glyphs/`` beside ``OUT.jsonl`` and
adds a ``glyph`` key with its relative path; other relative file paths are rewritten to stay
valid from ``OUT.jsonl``'s folder. Glyphs of the ``train`` and ``test`` splits are
disjoint: per class the first 70% of scikit-learn's glyphs serve ``train``, the rest ``test``.
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

TRAIN_FRACTION = 0.7


def glyphs_by_class(split: str) -> dict[int, np.ndarray]:
    """scikit-learn's 8x8 digit glyphs of one split, grouped by class."""
    digits = load_digits()
    groups = {}
    for label in range(10):
        images = digits.images[digits.target == label]
        cut = int(len(images) * TRAIN_FRACTION)
        groups[label] = images[:cut] if split == "train" else images[cut:]
    return groups


def add_glyphs(manifest_in: Path, manifest_out: Path, split: str, seed: int = 0) -> int:
    """Write a glyph for every labelled row; returns the number of rows written."""
    groups = glyphs_by_class(split)
    rng = np.random.default_rng(seed)
    glyph_dir = manifest_out.parent / "glyphs"
    glyph_dir.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in manifest_in.read_text().splitlines() if line.strip()]
    for n, row in enumerate(rows):
        for key, value in row.items():  # keep the other columns' relative paths valid
            if isinstance(value, str) and (manifest_in.parent / value).is_file():
                row[key] = os.path.relpath(manifest_in.parent / value, manifest_out.parent)
        choices = groups[int(row["label"])]
        path = glyph_dir / f"{split}-{n:05d}.npy"
        np.save(path, choices[rng.integers(len(choices))].astype(np.float32))
        row["glyph"] = str(path.relative_to(manifest_out.parent))
    manifest_out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest_in", type=Path)
    parser.add_argument("manifest_out", type=Path)
    parser.add_argument("--split", choices=["train", "test"], required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = add_glyphs(args.manifest_in, args.manifest_out, args.split, args.seed)
    print(f"wrote {count} rows with glyphs to {args.manifest_out}")


if __name__ == "__main__":
    main()
