"""What the ``gramx`` commands print: aligned tables and the evaluation report."""

from __future__ import annotations

__all__ = ["print_table", "print_report"]

METRIC_KEYS = ("R@1", "R@5", "R@10", "MedR", "MeanR", "mAP")


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Print ``rows`` under ``header`` in aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_report(report: dict) -> None:
    """Print an evaluation report (:func:`gramx.evaluate.report.evaluate`) as tables."""
    print(f"{report['tuples']} tuples")
    rows = [
        [kind, key] + [f"{metrics[k]:.2f}" if k in ("R@1", "R@5", "R@10", "mAP", "MeanR") else f"{metrics[k]:g}"
                       for k in METRIC_KEYS]
        for kind in ("retrieval", "nway", "nway_cosine")
        for key, metrics in report[kind].items()
    ]
    if rows:
        print()
        print_table(rows, ["kind", "query->candidates", *METRIC_KEYS])
    if report["zeroshot"]:
        print()
        print_table([[name, f"{acc:.2f}"] for name, acc in report["zeroshot"].items()], ["zero-shot", "accuracy %"])
