"""The demo's figures (matplotlib, Agg backend): training curves, a 2-D map of the shared
space, tuple-volume histograms and zero-shot bars. Every function writes one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "spread_labels", "training_curves", "embedding_map", "volume_histograms", "zeroshot_bars", "objective_bars"]

MARKERS = {"audio": "o", "image": "s", "glyph": "D", "text": "^", "video": "P", "subtitles": "X",
           "depth": "v", "pointcloud": "*"}
MODEL_COLOURS = {"GRAM": "#d62728", "GRAM + warm-up": "#9467bd", "pairwise": "#1f77b4", "Symile": "#2ca02c"}
DPI = 110


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(curves: dict[str, tuple[list[int], list[float]]], batch_size: int, path: Path,
                    steps_per_epoch: int | None = None) -> Path:
    """Contrastive loss per step of each model; a dashed line marks the loss of random guessing."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, (steps, losses) in curves.items():
        ax.plot(steps, losses, label=f"{name} loss", color=MODEL_COLOURS.get(name), linewidth=2)
    chance = math.log(batch_size)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.annotate(f"random guessing (ln {batch_size} = {chance:.2f})", (0.99, chance), xycoords=("axes fraction", "data"),
                ha="right", va="bottom", fontsize=8, color="grey")
    if steps_per_epoch:
        last = max((s[-1] for s, _ in curves.values() if s), default=0)
        for e in range(steps_per_epoch, last, steps_per_epoch):
            ax.axvline(e, color="#dddddd", linewidth=0.8, zorder=0)
    ax.set_xlabel("optimizer step" + (" (thin lines: epochs)" if steps_per_epoch else ""))
    ax.set_ylabel("contrastive loss (cross-entropy over the batch)")
    ax.set_title("Training curves: " + " vs ".join(curves))
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _project_2d(points: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "tsne" and len(points) > 30:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(points) - 1) / 3)
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=500).fit_transform(points)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(points)


def spread_labels(anchors: np.ndarray, gap: float, iterations: int = 500) -> np.ndarray:
    """Label positions near ``anchors [n, 2]`` with every two at least ``gap`` apart.

    Coinciding anchors (the GRAM model may put several class prompts on one spot) start on a
    small circle and push each other apart until no two labels are closer than ``gap``.
    """
    n = len(anchors)
    angles = 2 * np.pi * np.arange(n) / max(n, 1)
    pos = np.asarray(anchors, dtype=np.float64) + 0.25 * gap * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.linalg.norm(delta, axis=-1) + np.eye(n) * 2 * gap
        if dist.min() >= gap:
            break
        overlap = np.clip(gap - dist, 0, None) / 2
        pos += (delta / np.maximum(dist, 1e-12)[..., None] * overlap[..., None]).sum(axis=1) * 1.05
    return pos


def embedding_map(panels: dict[str, dict], classes: list[str], path: Path, method: str = "tsne",
                  seed: int = 0) -> Path:
    """One panel per model: test embeddings of every modality in 2-D (t-SNE or PCA), colour =
    class, marker = modality; the class prompts ("the digit seven") are large outlined stars.

    ``panels[model] = {"feats": {modality: [N, D]}, "labels": {modality: [N]}, "prompts": [C, D] | None}``.
    """
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.6), squeeze=False)
    for ax, (model, panel) in zip(axes[0], panels.items()):
        chunks, owners = [], []
        for name, feats in panel["feats"].items():
            chunks.append(np.asarray(feats, dtype=np.float32))
            owners += [(name, int(lbl)) for lbl in panel["labels"][name]]
        if panel.get("prompts") is not None:
            chunks.append(np.asarray(panel["prompts"], dtype=np.float32))
            owners += [("prompt", c) for c in range(len(panel["prompts"]))]
        xy = _project_2d(np.concatenate(chunks), method, seed)
        kinds = [o[0] for o in owners]
        labels = np.array([o[1] for o in owners])
        for name in panel["feats"]:
            idx = np.array([i for i, k in enumerate(kinds) if k == name])
            ax.scatter(xy[idx, 0], xy[idx, 1], c=[cmap(int(lbl) % 10) for lbl in labels[idx]], s=14, alpha=0.65,
                       marker=MARKERS.get(name, "o"), linewidths=0)
        idx = np.array([i for i, k in enumerate(kinds) if k == "prompt"])
        if len(idx):
            ax.scatter(xy[idx, 0], xy[idx, 1], c=[cmap(int(lbl) % 10) for lbl in labels[idx]], s=260, marker="*",
                       edgecolors="black", linewidths=1.0, zorder=5)
            span = float(np.ptp(xy, axis=0).max()) or 1.0
            for i, where in zip(idx, spread_labels(xy[idx], gap=0.06 * span)):
                ax.annotate(classes[labels[i]], xy[i], xytext=where, fontsize=8, fontweight="bold", zorder=6,
                            ha="center", va="center", arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6})
        ax.set_title(f"{model} model: test embeddings ({'t-SNE' if method == 'tsne' else 'PCA'})")
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
        ax.set_xticks([])
        ax.set_yticks([])
    modality_handles = [plt.Line2D([], [], linestyle="", marker=MARKERS.get(n, "o"), color="dimgrey", label=n)
                        for n in next(iter(panels.values()))["feats"]]
    modality_handles.append(plt.Line2D([], [], linestyle="", marker="*", markersize=13, color="white",
                                       markeredgecolor="black", label="class prompt (text)"))
    class_handles = [plt.Line2D([], [], linestyle="", marker="o", color=cmap(i % 10), label=c)
                     for i, c in enumerate(classes)]
    fig.legend(handles=modality_handles, title="marker = modality", loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.legend(handles=class_handles, title="colour = class", loc="lower left", bbox_to_anchor=(1.0, 0.05))
    fig.suptitle("The shared space: same class should cluster together, whatever the modality", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def volume_histograms(volumes: dict[str, tuple[np.ndarray, np.ndarray]], tuple_name: str, path: Path) -> Path:
    """Per model: histogram of the Gram volume of matching tuples vs tuples of different classes."""
    fig, axes = plt.subplots(1, len(volumes), figsize=(5.4 * len(volumes), 3.8), squeeze=False, sharey=False)
    bins = np.linspace(0, 1, 41)
    for ax, (model, (pos, neg)) in zip(axes[0], volumes.items()):
        ax.hist(np.asarray(neg), bins=bins, density=True, alpha=0.55, color="grey",
                label=f"different class (n={len(neg)})")
        ax.hist(np.asarray(pos), bins=bins, density=True, alpha=0.7, color=MODEL_COLOURS.get(model, "C0"),
                label=f"matching tuple (n={len(pos)})")
        if len(pos) and len(neg):
            ax.axvline(float(np.median(pos)), color=MODEL_COLOURS.get(model, "C0"), linestyle="--", linewidth=1)
            ax.axvline(float(np.median(neg)), color="dimgrey", linestyle="--", linewidth=1)
        ax.set_title(f"{model} model")
        ax.set_xlabel(f"Gram volume of {tuple_name} (0 = aligned, 1 = orthogonal)")
        ax.set_ylabel("density")
        ax.set_xlim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Tuple volumes on the test split (dashed: medians); better separation = better retrieval")
    fig.tight_layout()
    return _save(fig, path)


def zeroshot_bars(accuracy: dict[str, dict[str, float]], chance: float, path: Path) -> Path:
    """Zero-shot accuracy per modality, one bar per model."""
    modalities = sorted({m for acc in accuracy.values() for m in acc})
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(modalities), 3.8))
    width = 0.8 / max(1, len(accuracy))
    for i, (model, acc) in enumerate(accuracy.items()):
        xs = np.arange(len(modalities)) + (i - (len(accuracy) - 1) / 2) * width
        values = [acc.get(m, 0.0) for m in modalities]
        bars = ax.bar(xs, values, width, label=model, color=MODEL_COLOURS.get(model))
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.0f}%)")
    ax.set_xticks(np.arange(len(modalities)), modalities)
    ax.set_ylim(0, 119)
    ax.set_ylabel("accuracy on the test split (%)")
    ax.set_xlabel("modality classified by its nearest class prompt")
    ax.set_title("Zero-shot classification")
    ax.legend(loc="upper center", ncol=len(accuracy) + 1, fontsize=8)
    return _save(fig, path)


def objective_bars(values: dict[str, dict[str, float]], measures: dict[str, str], chance: dict[str, float],
                   path: Path) -> Path:
    """One panel per task: each objective's headline measure (percent), with the task's chance level."""
    fig, axes = plt.subplots(1, len(values), figsize=(4.6 * len(values), 3.6), squeeze=False)
    for ax, (task, by_objective) in zip(axes[0], values.items()):
        names = list(by_objective)
        bars = ax.bar(range(len(names)), [by_objective[n] for n in names],
                      color=[plt.get_cmap("tab10")(i) for i in range(len(names))])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.axhline(chance[task], color="dimgrey", linestyle="--", linewidth=1, label=f"chance ({chance[task]:g}%)")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylim(0, 105)
        ax.set_title(f"{task}: {measures[task]}")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle("Objectives on tasks that need both modalities at once (test split)")
    fig.tight_layout()
    return _save(fig, path)
