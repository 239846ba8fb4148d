"""Extending a trained space on the digits data: bridge without pairs vs add with pairs vs joint training.

Space A = (text, image) and space B = (text, audio) are trained separately (different
seeds and text pooling). Then:

- **bridged**: B is projected into A through text with unpaired pools only (Ex-MCR);
- **added**: audio is added to the frozen space A with paired (audio, text, image) tuples;
- **upper bound**: audio, image and text trained jointly on real tuples (examples/digits.yaml).

Each is scored by class-level audio->image retrieval on the test split (P@1 = R@1 with
class relevance, and mAP), next to chance (10%). ``--quick`` trains 3 epochs instead of 6 and
the projector 300 steps (for tests).

    python benchmarks/bench_extend.py [--quick] [--out runs/bench-extend]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gramx.train.config import load_config
from gramx.evaluate.report import evaluate
from gramx.extend.grow import add_modalities, bridge_spaces, load_bridge_config
from gramx.model.model import load_model
from gramx.train.loop import train

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEST = EXAMPLES / "data/digits/test.jsonl"
CHANCE = 10.0


def _run(name: str, out: Path, quick: bool, extra: list[str] | None = None) -> list[str]:
    overrides = [f"output.dir={out / name}", "logging.progress=false", "logging.tensorboard=false",
                 "eval.metrics=[retrieval]", "data.val=null"]
    if quick:
        overrides += ["optim.epochs=3"]
    return overrides + (extra or [])


def audio_to_image(model_dir: Path) -> dict[str, float]:
    """Class-level audio->image P@1 and mAP on the test split."""
    report = evaluate(load_model(model_dir), TEST, parts=("retrieval",))
    scores = report["retrieval"]["audio->image"]
    return {"P@1": scores["R@1"], "mAP": scores["mAP"]}


def arguments(doc: str, default_out: str) -> tuple[Path, bool]:
    """The output folder and ``--quick`` of an extension benchmark's command line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    parser.add_argument("--out", type=Path, default=Path(default_out))
    args = parser.parse_args()
    return args.out.resolve(), args.quick


def timer(timings: dict, prefix: str = ""):
    """``timed(label, fn)``: call ``fn``, record and print its wall time under ``label``."""

    def timed(label, fn):
        start = time.perf_counter()
        value = fn()
        timings[label] = round(time.perf_counter() - start, 1)
        print(f"{prefix}{label}: {timings[label]} s", flush=True)
        return value

    return timed


def main() -> dict:
    out, quick = arguments(__doc__, "runs/bench-extend")
    timings, results = {}, {}
    timed = timer(timings)
    space_a = timed("train space A (text, image)", lambda: train(
        load_config(EXAMPLES / "digits-space-a.yaml", _run("space-a", out, quick))))
    space_b = timed("train space B (text, audio)", lambda: train(
        load_config(EXAMPLES / "digits-space-b.yaml", _run("space-b", out, quick))))
    bridge_overrides = [f"base={space_a}", f"leaf={space_b}", f"output={out / 'bridged'}", "progress=false"]
    if quick:
        bridge_overrides += ["steps=300"]
    bridged = timed("bridge B into A (unpaired pools)", lambda: bridge_spaces(
        load_bridge_config(EXAMPLES / "bridge-digits.yaml", bridge_overrides)))
    added = timed("add audio to frozen A (paired)", lambda: add_modalities(
        space_a, load_config(EXAMPLES / "extend-add-audio.yaml", _run("added", out, quick))))
    joint = timed("joint audio+image+text (paired upper bound)", lambda: train(
        load_config(EXAMPLES / "digits.yaml", _run("joint", out, quick))))

    for label, model_dir in (("bridged (no audio-image pairs)", bridged), ("added to frozen A (paired)", added),
                             ("joint training (paired upper bound)", joint)):
        results[label] = audio_to_image(model_dir)
    upper = results["joint training (paired upper bound)"]["P@1"]
    bridged_p1 = results["bridged (no audio-image pairs)"]["P@1"]

    print("\n| model | audio->image P@1 | mAP |\n|---|---|---|")
    print(f"| chance | {CHANCE:.1f} | {CHANCE:.1f} |")
    for label, r in results.items():
        print(f"| {label} | {r['P@1']:.1f} | {r['mAP']:.1f} |")
    print(f"\nbridged / upper bound P@1: {bridged_p1 / upper:.2f} (target >= 0.80)")
    summary = {"quick": quick, "results": results, "timings_s": timings, "ratio": bridged_p1 / upper}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
