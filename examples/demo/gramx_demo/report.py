"""``report.md``: the tables, the figures and a short explanation for newcomers."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from gramx_demo.common import Timings, markdown_table

__all__ = ["write_report"]

INTRO = """\
# gramx demo report

gramx puts every modality (sound, pictures, text, video, 3-D shapes, ...) into **one shared
space**: each encoder maps its input to a unit vector of the same size, and things that mean
the same should end up close together. Three ways of training that space are compared here:

- **GRAM + warm-up** (the volume loss, trained with its recipe): the items of a training
  tuple are treated as one set of vectors; the *Gram volume* of that set (the volume of the
  parallelotope they span, 0 when they point the same way, 1 when they are orthogonal) must be
  small for matching tuples and large for mismatched ones. Every modality takes a turn as the
  anchor, and a pairwise term fades out over the first 150 steps, after which the volume
  trains alone: `loss: {{type: gram, anchor: all, pairwise_warmup: 150}}` in a run file.
- **pairwise InfoNCE** (the CLIP / ImageBind recipe): each modality is pulled towards its
  caption separately, by cosine similarity.
- **Symile** (the multilinear inner product of the whole tuple): the peer that can express
  relations none of the pairs show (section 2).

All use the same encoders, data, steps, batch size, learning rate and seed; only the loss
differs.
"""

HOW_TO_READ = """\
### How to read the numbers

- **P@1** (precision at 1, = R@1 here): how often the single best match is of the right
  digit. **mAP**: mean average precision over all items of the right digit (100 = all of
  them ranked before any wrong one). Chance is about 10 for both.
- **N-way retrieval** asks one modality to find the right *tuple* of all the others, e.g. a
  recording against (photo, caption) pairs. Each model scores a tuple by its own similarity
  (*volume*: the Gram volume of the query with it; *cosine*; *mip*: Symile's multilinear
  product), *cosine-sum* by adding the cosine similarities of the query to each member.
- **Zero-shot classification**: each test recording / photo is given the digit whose text
  prompt (e.g. "the digit seven") lies closest to it. No classifier was trained: the digit
  is read off the shared space.
"""


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _digits_section(result, out: Path, opts) -> list[str]:
    zs = {m: a.report["zeroshot"] for m, a in result.analyses.items()}
    lines = [
        "## 1. Digits: spoken, signed, written" if "glyph" in result.modalities else "## 1. Digits: spoken and signed",
        "",
        f"Modalities: {', '.join(result.modalities)}. {result.train_rows} training tuples, "
        f"{result.test_rows} test tuples (recordings and photos never seen in training; some test "
        "tuples have no photo, which gramx handles as a missing modality). Each model trained for "
        f"{result.steps} steps of {opts.batch_size} tuples ({opts.epochs} epochs) from scratch; the text "
        "encoder (MiniLM) is frozen and only its projection head learns.",
        "",
        "### Zero-shot classification (accuracy %, chance = 10)",
        "",
        markdown_table(*result.tables["zeroshot"]),
        "",
        f"![zero-shot accuracy]({_rel(result.figures['zeroshot'], out)})",
        "",
        "### Class-level retrieval between every pair of modalities (cosine similarity, percent)",
        "",
        markdown_table(*result.tables["retrieval"]),
        "",
        "### N-way retrieval: one modality against tuples of all the others (P@1 / mAP, percent)",
        "",
        markdown_table(*result.tables["nway"]),
        "",
        HOW_TO_READ,
        "### Search it in a browser",
        "",
        "The GRAM model's embeddings of the test split are an index; this command serves it with a "
        "page at http://127.0.0.1:8000/ (search by text, a recording or a photo; see README's Serve):",
        "",
        "```",
        result.serve,
        "```",
        "",
        "### Training curves",
        "",
        f"![training curves]({_rel(result.figures['curves'], out)})",
        "",
        "Each curve is the model's contrastive term, a cross-entropy over the batch, so they share a scale: the dashed line is the loss "
        "of a model that cannot tell tuples apart. The floor is above 0 because a batch holds several "
        "tuples of the same digit, which no loss here may tell apart.",
        "",
        "### The shared space in 2-D",
        "",
        f"![embedding map]({_rel(result.figures['map'], out)})",
        "",
        "Each point is one test item, coloured by its digit; the marker says which modality it "
        "came from, and the stars are the ten text prompts used for zero-shot classification. In "
        "a well-aligned space each colour forms one cluster that mixes all markers and holds its "
        "star.",
        "",
        "### Volumes of matching vs mismatched tuples",
        "",
        f"![volume histograms]({_rel(result.figures['volumes'], out)})",
        "",
        "For every complete test tuple the Gram volume of (caption, recording, photo, ...) is shown "
        "in colour; in grey the volume of a caption with the other items of a tuple of a different "
        "digit. The further apart the two humps, the easier it is to tell matching tuples from "
        "the rest.",
        "",
        "### What this run shows",
        "",
    ]
    lines += _digits_findings(result, zs)
    return lines


def _digits_findings(result, zs: dict[str, dict[str, float]]) -> list[str]:
    """What the numbers of this run say, in words."""
    lines = []
    for label, accuracy in zs.items():
        weak = [m for m, v in sorted(accuracy.items()) if v < 50]
        lines.append(f"- **{label}**: zero-shot " + ", ".join(f"{m} {v:.1f}%" for m, v in sorted(accuracy.items()))
                     + (f" ({', '.join(weak)} not aligned with the text at this budget)." if weak else "."))
    lines += ["", "Why GRAM needs its recipe: trained alone with the caption as the only anchor, the volume "
              "does not form a space from scratch (45.6% zero-shot audio against 95.1% with the warm-up, "
              "`python benchmarks/bench_objectives.py`, three seeds, BENCHMARKS.md): it cannot tell a vector "
              "from its negative, and it is flat at the random start, where every vector is nearly orthogonal "
              "to the others. The fading pairwise term fixes the signs and gives the first gradients; every "
              "modality anchoring in turn keeps all of them aligned once the volume trains alone. Symile's product of the whole tuple aligns no pair, so it "
              "classifies poorly here, where each modality carries the whole label; it is the objective "
              "for relations none of the pairs show (section 2).", ""]
    return lines


def _objectives_section(result, out: Path) -> list[str]:
    lines = [
        "## 2. Objectives on tasks that need both modalities at once",
        "",
        "In the digits data every modality carries the whole label, so pairs suffice. Two tasks built from the "
        "same recordings and photos need the pair: **composition** (caption \"spoken seven, signed three\": most "
        "candidate pairs share one digit with the query) and **modular sum** (caption \"sum ends in x + y mod "
        "10\": it says nothing about either modality alone, so pairwise alignment cannot beat chance). Each "
        "objective fine-tunes the same pairwise digits space with the same encoders, steps and seed, and each "
        "model is scored by its own similarity (volume, area, multilinear inner product or cosine), the "
        "cosine-sum beside it. Test split, percent:",
        "",
    ]
    for task, (rows, header) in result["tables"].items():
        lines += [f"**{task}**", "", markdown_table(rows, header), ""]
    lines += [f"![objectives]({_rel(result['figure'], out)})", "",
              "Only the multilinear inner product (Symile) can express \"the pair's digits sum to x\" as a "
              "similarity; the volume and the triangle area measure how far the three vectors are from lying "
              "together, which a sum of two independent digits does not give. The full comparison (every "
              "objective, three tasks, three seeds) is `python benchmarks/bench_objectives.py`; its table is in "
              "BENCHMARKS.md.", ""]
    return lines


def _media_section(result, out: Path) -> list[str]:
    lines = [
        "## 3. Clips: video + audio + subtitles + text (the MSR-VTT recipe)",
        "",
        f"{result['clips']} short MP4 clips were built from the digits data: the sign photo with a slow zoom "
        f"({result['spec']}), the spoken digit as the AAC audio track, and an SRT file whose cue is the "
        "word. As in GRAM's MSR-VTT pipeline the audio is decoded from the clip into a WAV file before "
        "the audio encoder reads it. The model aligns video, audio and subtitles with the caption "
        f"({result['loss']}).",
        "",
        markdown_table(*result["table"]),
        "",
        "The subtitles hold the spoken word itself, so they are the easiest member of a clip's tuple "
        "to align; the zero-shot rows for video and audio show what those encoders learned on their own "
        "from 150 training clips.",
        "",
        "Text search over the test clips (query embedded by the text encoder, each clip scored by the Gram "
        "volume of the query with its (video, audio, subtitles) tuple; smaller = better):",
        "",
    ]
    for query, model, rows, header in result["searches"]:
        lines += [f"Query **\"{query}\"**, {model} model:", "", markdown_table(rows, header), ""]
    return lines


def _shapes_section(result, out: Path) -> list[str]:
    return [
        "## 4. 3-D shapes: depth map + point cloud + text",
        "",
        f"{result['train']} training and {result['test']} test shapes of {result['classes']} classes were "
        "generated with `gramx-shapes` (open3d primitives with random proportions, rotation and size; a "
        "ray-cast depth map and a surface point cloud for each). Retrieval on the test split "
        f"({result['loss']}; class-level, percent):",
        "",
        markdown_table(*result["table"]),
        "",
    ]


def write_report(out: Path, timings: Timings, opts=None, digits=None, objectives=None, media=None, shapes=None,
                 command: str = "gramx demo") -> Path:
    """Write ``out/report.md`` for the stages that ran."""
    lines = [INTRO.format(), f"Command: `{command}`", ""]
    if digits is not None:
        lines += _digits_section(digits, out, opts)
    if objectives is not None:
        lines += _objectives_section(objectives, out)
    if media is not None:
        lines += _media_section(media, out)
    if shapes is not None:
        lines += _shapes_section(shapes, out)
    wall, cpu = timings.total()
    rows = [[name, f"{w:.1f}", f"{c:.1f}"] for name, (w, c) in timings.steps.items()]
    rows.append(["**total**", f"**{wall:.1f}**", f"**{cpu:.1f}**"])
    lines += [
        "## Timing",
        "",
        f"On {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch with "
        f"{_threads()} thread(s). CPU seconds count this process only; wall seconds also include "
        "time spent waiting for the cores when the machine is shared.",
        "",
        markdown_table(rows, ["step", "wall s", "CPU s"]),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _threads() -> int:
    import torch

    return torch.get_num_threads()
