"""Reproduce GRAM's MSR-VTT retrieval numbers from the official embeddings.

The embeddings (884 test items; text, video, audio, subtitles) come from the official GRAM
repository; see ``benchmarks/data/msrvtt-gram/SOURCE.md`` for their origin, licence and the
table this script reproduces. Text-to-video scores each text against the tuple (video,
audio, subtitles) of every item with the 4-vector Gram volume, ``gramx.volume_matrix`` in
float64; video-to-text is the transpose. The baseline is text-video cosine similarity.
Ranks follow the gramx contract (ties count against the query); the last column shows
R@1 with ties resolved in the query's favour, computed here for comparison only.

Run ``python benchmarks/msrvtt_reproduce.py``: it prints the table and exits with status 1
if any number differs from SOURCE.md at its printed precision.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import gramx
from gramx.evaluate.metrics import retrieval_metrics

DATA = Path(__file__).resolve().parent / "data" / "msrvtt-gram"
STEPS = (99, 0)
VOLUME = "volume(t, v, a, s)"
COSINE = "cosine(t, v)"
COLUMNS = ("R@1", "R@5", "R@10", "MedR", "R@1 favour")


@dataclass(frozen=True)
class Row:
    step: int
    scoring: str  # e.g. "volume(t, v, a, s), text->video"
    values: dict[str, float]

    def cells(self) -> list[str]:
        """The numbers as SOURCE.md prints them: recalls with one decimal, MedR as is."""
        v = self.values
        return [f"{v['R@1']:.1f}", f"{v['R@5']:.1f}", f"{v['R@10']:.1f}", f"{v['MedR']:g}", f"{v['R@1 favour']:.1f}"]


def load(step: int, data: Path = DATA) -> dict[str, torch.Tensor]:
    """The four ``[884, 512]`` embedding matrices of one step, as float64 tensors."""
    with np.load(data / f"step{step}.npz") as z:
        return {name: torch.from_numpy(z[name]).to(torch.float64) for name in ("text", "video", "audio", "subtitles")}


def r1_ties_in_favour(scores: torch.Tensor, higher_is_better: bool) -> float:
    """R@1 (percent) with rank = 1 + (candidates strictly better): NOT the gramx rule."""
    s = scores if higher_is_better else -scores
    better = (s > s.diagonal().unsqueeze(1)).sum(dim=1)
    return 100.0 * (better == 0).double().mean().item()


def score_matrices(emb: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, bool]]:
    """Text-to-video score matrices ``[Nq, Nc]`` and whether higher is better."""
    tuples = torch.stack([emb["video"], emb["audio"], emb["subtitles"]], dim=1)  # [N, 3, D]
    volumes = gramx.volume_matrix(emb["text"], tuples)
    text = emb["text"] / emb["text"].norm(dim=1, keepdim=True)
    video = emb["video"] / emb["video"].norm(dim=1, keepdim=True)
    return {VOLUME: (volumes, False), COSINE: (text @ video.T, True)}


def evaluate_step(step: int, data: Path = DATA) -> list[Row]:
    rows = []
    for scoring, (t2v, higher) in score_matrices(load(step, data)).items():
        for direction, scores in (("text->video", t2v), ("video->text", t2v.T)):
            values = dict(retrieval_metrics(scores, higher_is_better=higher))
            values["R@1 favour"] = r1_ties_in_favour(scores, higher)
            rows.append(Row(step, f"{scoring}, {direction}", values))
    return rows


def expected_rows(source: Path = DATA / "SOURCE.md") -> dict[tuple[int, str], list[str]]:
    """The published table: ``(step, scoring) -> [R@1, R@5, R@10, MedR, R@1 favour]`` as printed."""
    table = {}
    for line in source.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(COLUMNS) and re.fullmatch(r"\d+", cells[0]):
            table[(int(cells[0]), cells[1])] = cells[2:]
    return table


def format_table(rows: list[Row]) -> str:
    lines = [
        "| step | scoring | R@1 | R@5 | R@10 | MedR | R@1 with ties in the query's favour |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.step} | {r.scoring} | " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def mismatches(rows: list[Row], expected: dict[tuple[int, str], list[str]]) -> list[str]:
    problems = []
    for row in rows:
        want = expected.get((row.step, row.scoring))
        if want is None:
            problems.append(f"step {row.step}, {row.scoring}: not in SOURCE.md")
        elif row.cells() != want:
            diffs = [f"{c} {g} != {w}" for c, g, w in zip(COLUMNS, row.cells(), want) if g != w]
            problems.append(f"step {row.step}, {row.scoring}: " + ", ".join(diffs))
    missing = set(expected) - {(r.step, r.scoring) for r in rows}
    problems += [f"step {s}, {name}: in SOURCE.md but not reproduced" for s, name in sorted(missing)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with step*.npz and SOURCE.md")
    args = parser.parse_args(argv)
    rows = [row for step in STEPS for row in evaluate_step(step, args.data)]
    print("MSR-VTT test set (884 items), official GRAM embeddings, float64 Gram volumes")
    print("ranks count ties against the query (gramx contract); last column for comparison only\n")
    print(format_table(rows))
    problems = mismatches(rows, expected_rows(args.data / "SOURCE.md"))
    if problems:
        print("\nDIFFERS from SOURCE.md:\n  " + "\n  ".join(problems))
        return 1
    print(f"\nall {len(rows)} rows x {len(COLUMNS)} numbers match SOURCE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
