"""Retrieval metrics and zero-shot classification over score matrices.

Ranks are pessimistic about ties: a candidate that scores exactly as well as the query's
best relevant item counts against the query (duplicate captions are common in real test
sets, and resolving ties in the query's favour inflates recall).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ranks", "retrieval_metrics", "average_precision", "zeroshot_accuracy"]

RECALL_AT = (1, 5, 10)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _oriented(scores, higher_is_better: bool, positives) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores as float64 with higher = better, and the boolean relevance matrix."""
    s = _as_tensor(scores).detach().to(torch.float64)
    if s.dim() != 2:
        raise ValueError(f"scores must be [Nq, Nc], got shape {tuple(s.shape)}")
    s = s if higher_is_better else -s
    s = s.nan_to_num(nan=float("-inf"))  # a broken (NaN) score is the worst score, never a hit
    if positives is None:
        if s.shape[0] > s.shape[1]:
            raise ValueError(f"diagonal ground truth needs Nq <= Nc, got {tuple(s.shape)}; pass positives=")
        pos = torch.zeros(s.shape, dtype=torch.bool)
        pos.fill_diagonal_(True)
    else:
        pos = _as_tensor(positives).to(torch.bool)
        if pos.shape != s.shape:
            raise ValueError(f"positives shape {tuple(pos.shape)} does not match scores {tuple(s.shape)}")
    if not pos.any(dim=1).all():
        raise ValueError("every query needs at least one relevant candidate")
    return s, pos.to(s.device)


def ranks(scores, higher_is_better: bool = False, positives=None) -> torch.Tensor:
    """1-based rank of each query's best relevant candidate, ties counted against the query.

    ``rank = 1 + (candidates strictly better) + (irrelevant candidates with the same score)``.
    """
    s, pos = _oriented(scores, higher_is_better, positives)
    best = s.masked_fill(~pos, float("-inf")).max(dim=1, keepdim=True).values
    better = (s > best).sum(dim=1)
    tied = ((s == best) & ~pos).sum(dim=1)
    return 1 + better + tied


def average_precision(scores, higher_is_better: bool = False, positives=None) -> torch.Tensor:
    """Average precision per query (fraction in [0, 1]); tied irrelevant items rank first."""
    s, pos = _oriented(scores, higher_is_better, positives)
    s, pos = s.cpu(), pos.cpu()
    # Best score first; among equal scores the irrelevant candidates come first.
    order = torch.from_numpy(np.lexsort((pos.numpy(), -s.numpy()), axis=-1))
    rel = pos.gather(1, order).double()
    hits = rel.cumsum(dim=1)
    position = torch.arange(1, s.shape[1] + 1, dtype=torch.float64)
    return (hits / position * rel).sum(dim=1) / rel.sum(dim=1)


def retrieval_metrics(scores, higher_is_better: bool = False, positives=None) -> dict[str, float]:
    """Recall@1/5/10 (percent), median and mean rank (1-based) and mAP (percent).

    ``scores[Nq, Nc]``: by default smaller is better (volumes); pass
    ``higher_is_better=True`` for similarities. Ground truth is the diagonal unless
    ``positives[Nq, Nc]`` (bool) marks the relevant candidates of each query.
    """
    r = ranks(scores, higher_is_better, positives).to(torch.float64)
    metrics = {f"R@{k}": 100.0 * (r <= k).double().mean().item() for k in RECALL_AT}
    metrics["MedR"] = float(np.median(r.cpu().numpy()))
    metrics["MeanR"] = r.mean().item()
    metrics["mAP"] = 100.0 * average_precision(scores, higher_is_better, positives).mean().item()
    return metrics


def zeroshot_accuracy(items: torch.Tensor, prompts: torch.Tensor, labels) -> float:
    """Accuracy (percent) of classifying each item by its most similar class prompt.

    ``items[N, D]`` and ``prompts[C, D]`` are L2-normalised embeddings (prompt c for
    class c); ``labels[N]`` holds class indices.
    """
    labels = _as_tensor(labels).to(items.device).long()
    predicted = (items.float() @ prompts.float().T).argmax(dim=1)
    return 100.0 * (predicted == labels).double().mean().item()


# --------------------------------------------------------------------------- evaluation reports
# ``evaluate(model, manifest)`` returns the "Evaluation report" of DESIGN.md:
# {"tuples": N, "retrieval": {"a->b": metrics}, "nway": {"a->(b,c)": metrics}, "zeroshot": {"b": acc}}

__all__ += ["evaluate", "report_from_embeddings", "read_classes"]

REPORT_PARTS = ("retrieval", "nway", "zeroshot")


def read_classes(source) -> list[str]:
    """Class names from a file (line i = label i) or a list of names."""
    if isinstance(source, list | tuple):
        return [str(c) for c in source]
    from pathlib import Path

    from gramx.errors import GramxError

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


def _zeroshot_targets(labels, classes: list[str] | None) -> tuple[list[str], list[int | None]] | None:
    """Class names and the class index of each row (``None`` for unlabelled rows)."""
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
            from gramx.errors import GramxError

            raise GramxError(
                f"label {label!r} has no class name ({len(classes)} classes given)",
                hint="the classes file needs one line per label: line i names label i",
            )
    return classes, targets


def report_from_embeddings(
    emb,
    model=None,
    classes=None,
    template: str = "{}",
    parts=REPORT_PARTS,
    text_modality: str = "text",
) -> dict:
    """The evaluation report for precomputed :class:`gramx.model.Embeddings`.

    ``model`` is needed for zero-shot (to embed the class prompts with its ``text`` modality).
    """
    from gramx.volume import volume_matrix

    names = [n for n in emb.feats if bool(emb.masks[n].any())]
    report: dict = {"tuples": len(emb), "retrieval": {}, "nway": {}, "zeroshot": {}}
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
        rows = _both(emb.masks, names)
        for q in names if rows.numel() else []:
            others = [n for n in names if n != q]
            tuples = torch.stack([emb.feats[o][rows] for o in others], dim=1)
            scores = volume_matrix(emb.feats[q][rows], tuples)
            report["nway"][f"{q}->({','.join(others)})"] = retrieval_metrics(
                scores, higher_is_better=False, positives=_positives(emb.labels, rows)
            )
    if "zeroshot" in parts and model is not None and text_modality in getattr(model, "names", []):
        if classes is not None and not isinstance(classes, list):
            classes = read_classes(classes)
        found = _zeroshot_targets(emb.labels, classes)
        if found is not None:
            class_names, targets = found
            prompts = model.embed_values(text_modality, [template.format(c) for c in class_names])
            for name in names:
                if name == text_modality:
                    continue
                rows = [i for i in _both(emb.masks, [name]).tolist() if targets[i] is not None]
                if not rows:
                    continue
                idx = torch.tensor(rows, dtype=torch.long)
                report["zeroshot"][name] = zeroshot_accuracy(
                    emb.feats[name][idx], prompts.to(emb.feats[name].device), [targets[i] for i in rows]
                )
    return report


def evaluate(
    model,
    manifest,
    classes=None,
    template: str = "{}",
    batch_size: int = 64,
    workers: int = 0,
    on_error: str = "raise",
    parts=REPORT_PARTS,
    progress: bool = False,
) -> dict:
    """Evaluate a :class:`gramx.model.GramxModel` on a manifest; returns the evaluation report.

    ``retrieval``: every ordered modality pair (cosine similarity) over rows where both are
    present; ``nway``: each modality as query against the tuples of all the others (Gram
    volume; three or more modalities, rows where all are present); ``zeroshot``: items of
    each non-text modality classified by their nearest class prompt (``classes``: a file
    or list, line i = label i; default: the labels when they are strings). Relevance is
    label-level when every row involved has a label, else the row itself.
    """
    emb = model.embed_manifest(manifest, batch_size=batch_size, workers=workers, on_error=on_error,
                               progress=progress)
    return report_from_embeddings(emb, model=model, classes=classes, template=template, parts=parts)
