"""The digits bridge with a LoRA-tuned text tower against the frozen one, side by side in one run.

Space A = (text, image) and space B = (text, audio) are trained on the digits train split
(examples/digits-space-a.yaml, examples/digits-space-b.yaml) twice: once with MiniLM frozen,
as the examples have it (only the text head trains), and once with LoRA adapters on MiniLM's
attention query and value projections (``modalities.text.lora: {r: 8, alpha: 16}``), which
train with the head. Each pair is then bridged, B into A through text from unpaired pools
(examples/bridge-digits.yaml), and scored by class-level audio->image retrieval on the test
split, next to each space's own text->image / text->audio retrieval and the size of the
model directories (the frozen MiniLM is referenced, not copied, in both).

    python benchmarks/bench_lora_bridge.py [--quick] [--out runs/bench-lora-bridge]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extend import CHANCE, EXAMPLES, TEST, _run, arguments, audio_to_image, timer  # noqa: E402

from gramx.train.config import load_config  # noqa: E402
from gramx.evaluate.report import evaluate  # noqa: E402
from gramx.extend.grow import bridge_spaces, load_bridge_config  # noqa: E402
from gramx.model.model import load_model  # noqa: E402
from gramx.train.loop import train  # noqa: E402

VARIANTS = {"frozen MiniLM": [], "LoRA on MiniLM (r=8)": ["modalities.text.lora={r: 8, alpha: 16}"]}


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _text_to(model_dir: Path, other: str) -> float:
    report = evaluate(load_model(model_dir), TEST, parts=("retrieval",))
    return report["retrieval"][f"text->{other}"]["mAP"]


def main() -> dict:
    out, quick = arguments(__doc__, "runs/bench-lora-bridge")
    results = {}
    for label, extra in VARIANTS.items():
        tag = "lora" if extra else "frozen"
        timings = {}
        timed = timer(timings, f"{label}: ")
        space_a = timed("space A", lambda: train(load_config(
            EXAMPLES / "digits-space-a.yaml", _run(f"{tag}-space-a", out, quick, extra))))
        space_b = timed("space B", lambda: train(load_config(
            EXAMPLES / "digits-space-b.yaml", _run(f"{tag}-space-b", out, quick, extra))))
        overrides = [f"base={space_a}", f"leaf={space_b}", f"output={out / f'{tag}-bridged'}", "progress=false"]
        bridged = timed("bridge", lambda: bridge_spaces(load_bridge_config(
            EXAMPLES / "bridge-digits.yaml", overrides + (["steps=300"] if quick else []))))
        results[label] = {
            **audio_to_image(bridged), "A text->image mAP": _text_to(space_a, "image"),
            "B text->audio mAP": _text_to(space_b, "audio"),
            "model dirs MB (A, B, bridged)": [round(_size_mb(p), 2) for p in (space_a, space_b, bridged)],
            "timings_s": timings,
        }

    print("\n| text tower | bridged audio->image P@1 | mAP | A text->image mAP | B text->audio mAP "
          "| model dirs MB (A, B, bridged) | time A + B + bridge |\n|---|---|---|---|---|---|---|")
    print(f"| chance | {CHANCE:.1f} | {CHANCE:.1f} | | | | |")
    for label, r in results.items():
        sizes = ", ".join(f"{s:.2f}" for s in r["model dirs MB (A, B, bridged)"])
        total = " + ".join(f"{t:.0f}" for t in r["timings_s"].values())
        print(f"| {label} | {r['P@1']:.1f} | {r['mAP']:.1f} | {r['A text->image mAP']:.1f} "
              f"| {r['B text->audio mAP']:.1f} | {sizes} | {total} s |")
    summary = {"quick": quick, "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
