"""The evaluation report: a model's retrieval, n-way and zero-shot metrics on a manifest.

:func:`evaluate` embeds a manifest with a model and returns the report of DESIGN.md::

    {"tuples": N, "score": "volume", "retrieval": {"a->b": metrics},
     "nway": {"a->(b,c)": metrics, "(b,c)->a": ...}, "nway_cosine": {same keys}, "zeroshot": {"b": accuracy}}

``score`` is the similarity the model was trained with; ``nway`` and ``zeroshot`` use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from gramx.data.loading import ErrorLog
from gramx.data.manifest import Manifest
from gramx.embed.embedding import Embeddings, embed_manifest, embed_values
from gramx.errors import GramxError
from gramx.evaluate.metrics import retrieval_metrics, zeroshot_accuracy
from gramx.scores.similarity import SCORES, score_matrix

__all__ = ["evaluate", "read_classes", "zeroshot_targets", "summarize"]


# --------------------------------------------------------------------------- evaluation reports

REPORT_PARTS = ("retrieval", "nway", "zeroshot")


def read_classes(source) -> list[str]:
    """Class names from a file (line i = label i) or a list of names."""
    if isinstance(source, list | tuple):
        return [str(c) for c in source]
    path = Path(source)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GramxError(f"cannot read class names from {path}: {exc.strerror}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise GramxError(f"{path}: no class names", hint="one class name per line, line i = label i")
    return [line.strip() for line in lines]


def _label_ids(labels) -> torch.Tensor:
    """Labels (any hashable values) as integer ids for equality tests."""
    table: dict = {}
    return torch.tensor([table.setdefault(label, len(table)) for label in labels], dtype=torch.long)


def _positives(labels, rows: torch.Tensor) -> torch.Tensor | None:
    """Label-level relevance over ``rows`` when they all have labels, else ``None`` (identity)."""
    subset = [labels[i] for i in rows.tolist()]
    if not subset or any(label is None for label in subset):
        return None
    ids = _label_ids(subset)
    return ids[:, None] == ids[None, :]


def _both(masks: dict, names) -> torch.Tensor:
    present = torch.stack([masks[n].bool() for n in names]).all(dim=0)
    return present.nonzero().squeeze(1)


def zeroshot_targets(labels, classes: list[str] | None) -> tuple[list[str], list[int | None]] | None:
    """Class names and the class index of each row (``None`` for unlabelled rows).

    ``classes`` default to the labels when they are strings (else ``None`` is returned).
    A label with no class name is an error.
    """
    if classes is None:
        values = [label for label in labels if label is not None]
        if not values or not all(isinstance(label, str) for label in values):
            return None
        classes = sorted(set(values))
    index = {name: i for i, name in enumerate(classes)}
    targets: list[int | None] = []
    for label in labels:
        if label is None:
            targets.append(None)
        elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
            targets.append(label)
        elif str(label) in index:
            targets.append(index[str(label)])
        else:
            raise GramxError(
                f"label {label!r} has no class name ({len(classes)} classes given)",
                hint="the classes file needs one line per label: line i names label i",
            )
    return classes, targets


def _nway(emb: Embeddings, names: list[str], score: str) -> tuple[dict, dict]:
    """N-way retrieval over the rows where every modality is present, by ``score`` and by cosine sum.

    For each modality ``q``: ``q->(others)`` ranks tuples of the others for each item of
    ``q``, and ``(others)->q`` ranks items of ``q`` for each tuple (the transposed scores).
    A score defined for a fixed tuple size only (the triangle area: two) is left out for
    other sizes.
    """
    by_score, by_cosine = {}, {}
    rows = _both(emb.masks, names)
    if rows.numel() == 0:
        return by_score, by_cosine
    positives = _positives(emb.labels, rows)
    kind = SCORES[score]
    for q in names:
        others = [n for n in names if n != q]
        query, tuples = emb.feats[q][rows], torch.stack([emb.feats[o][rows] for o in others], dim=1)
        tuple_name = f"({','.join(others)})"
        fits = kind.tuple_size in (None, len(others))  # else the score is not defined for these tuples
        by_model = [(score, kind.higher_is_better, by_score)] if fits else []
        for name, higher, out in [*by_model, ("cosine", True, by_cosine)]:
            scores = score_matrix(name, query, tuples)
            for key, transpose in ((f"{q}->{tuple_name}", False), (f"{tuple_name}->{q}", True)):
                pos = None if positives is None else (positives.T if transpose else positives)
                out[key] = retrieval_metrics(scores.T if transpose else scores, higher, pos)
    return by_score, by_cosine


def _report(emb: Embeddings, model, classes, template: str, parts: Sequence[str], text_modality: str = "text",
            ) -> dict:
    """The evaluation report of ``emb``; ``model`` embeds the zero-shot prompts with its ``text`` modality."""
    names = [n for n in emb.feats if bool(emb.masks[n].any())]
    score = getattr(model, "score", "volume")
    report: dict = {"tuples": len(emb), "score": score, "retrieval": {}, "nway": {}, "nway_cosine": {},
                    "zeroshot": {}}
    if "retrieval" in parts:
        for a in names:
            for b in names:
                if a == b:
                    continue
                rows = _both(emb.masks, [a, b])
                if rows.numel() == 0:
                    continue
                scores = emb.feats[a][rows] @ emb.feats[b][rows].T
                report["retrieval"][f"{a}->{b}"] = retrieval_metrics(
                    scores, higher_is_better=True, positives=_positives(emb.labels, rows)
                )
    if "nway" in parts and len(names) >= 3:
        report["nway"], report["nway_cosine"] = _nway(emb, names, score)
    if "zeroshot" in parts and model is not None and text_modality in getattr(model, "names", []):
        if classes is not None and not isinstance(classes, list):
            classes = read_classes(classes)
        found = zeroshot_targets(emb.labels, classes)
        if found is not None:
            class_names, targets = found
            prompts = embed_values(model, text_modality, [template.format(c) for c in class_names])
            for name in names:
                if name == text_modality:
                    continue
                rows = [i for i in _both(emb.masks, [name]).tolist() if targets[i] is not None]
                if not rows:
                    continue
                idx = torch.tensor(rows, dtype=torch.long)
                report["zeroshot"][name] = zeroshot_accuracy(
                    emb.feats[name][idx], prompts.to(emb.feats[name].device), [targets[i] for i in rows], score)
    return report


def evaluate(
    model,
    manifest: str | Path | Manifest | Embeddings,
    classes=None,
    template: str = "{}",
    batch_size: int = 64,
    workers: int = 0,
    on_error: str = "raise",
    parts: Sequence[str] = REPORT_PARTS,
    progress: bool = False,
    error_log: ErrorLog | None = None,
) -> dict:
    """Evaluate a :class:`gramx.model.model.GramxModel` on a manifest; returns the evaluation report.

    ``manifest`` is a path, a :class:`gramx.data.loading.Manifest`, or :class:`gramx.embed.embedding.Embeddings`
    already computed with ``model`` (then nothing is embedded again).
    ``retrieval``: every ordered modality pair (cosine similarity) over rows where both are
    present; ``nway``: each modality as query against the tuples of all the others and each
    such tuple against the modality (scored by the model's ``score``; three or more
    modalities, rows where all are present), ``nway_cosine`` the same scored by the sum of
    cosine similarities; ``zeroshot``: items of each non-text modality classified by their
    best-scoring class prompt by ``score`` (``classes``: a file or list, line i = label i;
    default: the labels when they are strings). Relevance is label-level when every row
    involved has a label, else the row itself. Rows that fail to load raise, or with
    ``on_error="skip"`` are left out and
    recorded in ``error_log``.
    """
    emb = manifest if isinstance(manifest, Embeddings) else embed_manifest(
        model, manifest, batch_size=batch_size, workers=workers, on_error=on_error, error_log=error_log,
        progress=progress)
    return _report(emb, model, classes, template, parts)


def summarize(report: dict) -> str:
    """A one-line digest of an evaluation report: mean R@1 per kind and zero-shot accuracy."""
    out = []
    for kind in ("retrieval", "nway"):
        values = [m["R@1"] for m in report.get(kind, {}).values()]
        if values:
            out.append(f"{kind} mean R@1 {sum(values) / len(values):.1f}")
    for key, acc in report.get("zeroshot", {}).items():
        out.append(f"zero-shot {key} {acc:.1f}%")
    return ", ".join(out) or "no metrics"
