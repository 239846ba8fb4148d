"""The 3-D stage: synthetic shapes (depth map + point cloud + caption) from ``gramx-shapes``."""

from __future__ import annotations

from pathlib import Path

from gramx_demo.common import LOSSES, Timings, format_table, run_name, say, train_model

__all__ = ["run_shapes", "shapes_config"]



def shapes_config(train: Path, loss: dict, epochs: int, seed: int) -> dict:
    return {
        "modalities": {
            # per-image normalisation keeps the silhouette and relief, not the distance to the camera
            "depth": {"options": {"size": 32, "normalize": "per_image", "width": 16, "feature_dim": 128},
                      "preload": True},
            "pointcloud": {"options": {"num_points": 256, "feature_dim": 128}, "preload": True},
            "text": {"options": {"freeze": True}, "head": {"hidden": 256}},
        },
        "dim": 64,
        "loss": dict(loss),
        "data": {"train": str(train), "batch_size": 32, "workers": 0},
        "optim": {"lr": 3e-3, "warmup_steps": 10, "epochs": epochs, "seed": seed},
        "output": {"keep_checkpoints": 1},
    }


def run_shapes(out: Path, timings: Timings, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    from gramx.evaluate.report import evaluate, read_classes
    from gramx.model.model import load_model
    from gramx_pointcloud.shapes import generate

    work = out / "work" / "shapes"
    per_class = 10 if quick else 60
    with timings("shapes: generate"):
        counts = generate(work / "data", per_class=per_class, seed=seed, num_points=512, depth_size=32)
    say(f"generated {counts['train']} train + {counts['test']} test shapes of {counts['classes']} classes "
        f"with gramx-shapes (depth 32x32, 512-point clouds)")
    classes = read_classes(work / "data" / "classes.txt")
    epochs = 6 if quick else 12
    reports = {}
    for label, loss in LOSSES.items():
        say(f"training the {label} model on depth + point cloud + text ({epochs} epochs) ...")
        with timings(f"shapes: train {label}"):
            path = train_model(shapes_config(work / "data" / "train.jsonl", loss, epochs, seed),
                               work / "runs" / run_name(label), progress=progress)
        with timings(f"shapes: evaluate {label}"):
            model = load_model(path)
            reports[label] = evaluate(model, work / "data" / "test.jsonl", classes=classes,
                                      template="a 3d model of a {}")
    first = next(iter(reports.values()))
    rows = [[key.replace("->", " → ")] + [f"{r['retrieval'][key]['R@1']:.1f} / {r['retrieval'][key]['mAP']:.1f}"
                                          for r in reports.values()] for key in first["retrieval"]]
    rows += [[key.replace("->", " → ") + " (volume)"] + [f"{r['nway'][key]['R@1']:.1f} / {r['nway'][key]['mAP']:.1f}"
                                                         for r in reports.values()] for key in first["nway"]]
    rows += [[f"zero-shot {name} (accuracy)"] + [f"{r['zeroshot'][name]:.1f}" for r in reports.values()]
             for name in first["zeroshot"]]
    header = ["retrieval on test shapes"] + [f"{m} P@1 / mAP" for m in reports]
    say(f"\nShapes: class-level retrieval on the test split (percent; chance about {100 / len(classes):.0f})")
    say(format_table(rows, header))
    return {"train": counts["train"], "test": counts["test"], "classes": counts["classes"],
            "loss": f"{', '.join(LOSSES)} models, {epochs} epochs each", "table": (rows, header), "reports": reports}
