"""The clips stage: MP4 clips (video + AAC audio) and SRT subtitles built from the digits data,
trained and searched the way GRAM uses MSR-VTT (video, audio and subtitles against a caption)."""

from __future__ import annotations

from pathlib import Path

import torch

from gramx.embed import embed_manifest, embed_values
from gramx.runtime.progress import progress as progress_report
from gramx_demo.clips import ClipSpec, extract_audio, write_clip, write_srt
from gramx_demo.common import (
    LOSSES,
    Timings,
    absolute_rows,
    format_table,
    read_jsonl,
    run_name,
    say,
    train_model,
    write_jsonl,
)

__all__ = ["build_clips", "run_media", "WORDS"]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _balanced(rows: list[dict], count: int) -> list[dict]:
    """Up to ``count`` rows with a photo, taking the classes in turn."""
    by_label: dict = {}
    for row in rows:
        if row.get("image"):
            by_label.setdefault(row["label"], []).append(row)
    out, i = [], 0
    while len(out) < count and any(i < len(v) for v in by_label.values()):
        for label in sorted(by_label):
            if i < len(by_label[label]) and len(out) < count:
                out.append(by_label[label][i])
        i += 1
    return out


def build_clips(rows: list[dict], folder: Path, spec: ClipSpec | None = None, progress: bool = True,
                desc: str = "clips") -> list[dict]:
    """For each digits row (absolute paths): ``<id>.mp4`` (zooming photo + spoken digit),
    ``<id>.srt`` (the word) and ``<id>.wav`` (the audio track decoded back from the MP4).
    Returns manifest rows with video, audio, subtitles and text (paths relative to ``folder``)."""
    spec = spec or ClipSpec()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in progress_report(rows, desc=desc, unit="clip", leave=False, disable=not progress):
        cid = row["id"]
        clip = write_clip(row["image"], row["audio"], folder / f"{cid}.mp4", spec)
        write_srt(folder / f"{cid}.srt", WORDS[int(row["label"])], 0.0, spec.seconds)
        extract_audio(clip, folder / f"{cid}.wav")  # decode: the audio encoder reads WAV, not MP4
        out.append({"id": cid, "label": row["label"], "video": f"{folder.name}/{cid}.mp4",
                    "audio": f"{folder.name}/{cid}.wav", "subtitles": f"{folder.name}/{cid}.srt", "text": row["text"]})
    return out


def media_config(train: Path, loss: dict, epochs: int, seed: int) -> dict:
    return {
        "modalities": {
            "video": {"options": {"size": 48, "num_frames": 4}, "preload": True},
            "audio": {"options": {"sample_rate": 8000, "duration": 1.6, "n_mels": 32, "window_ms": 32, "hop_ms": 20},
                      "preload": True},
            "subtitles": {"options": {"freeze": True}, "head": {"hidden": 256}},
            "text": {"options": {"freeze": True}, "head": {"hidden": 256}},
        },
        "dim": 64,
        "loss": dict(loss),
        "data": {"train": str(train), "batch_size": 32, "workers": 0},
        "optim": {"lr": 3e-3, "warmup_steps": 10, "epochs": epochs, "seed": seed},
        "output": {"keep_checkpoints": 1},
    }


def search(model, emb, query: str, k: int = 5) -> list[list]:
    """Rank the clips of ``emb`` for a text query by the volume of (query, video, audio, subtitles)."""
    from gramx.scores.volume import volume_matrix

    others = [n for n in ("video", "audio", "subtitles") if n in emb.feats]
    rows = torch.stack([emb.masks[n] for n in others]).all(dim=0).nonzero().squeeze(1)
    q = embed_values(model, "text", [query])
    tuples = torch.stack([emb.feats[n][rows] for n in others], dim=1)
    volumes = volume_matrix(q, tuples)[0]
    order = volumes.argsort()[:k]
    out = []
    for rank, j in enumerate(order.tolist(), start=1):
        i = rows[j].item()
        word = WORDS[int(emb.labels[i])]
        out.append([rank, emb.ids[i], word, f"{volumes[j].item():.3f}", "yes" if word == query.strip().lower() else "no"])
    return out


def run_media(out: Path, data: Path, timings: Timings, clips: int = 200, queries=("seven", "two"),
              quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    from gramx.evaluate.report import evaluate
    from gramx.model.model import load_model

    work = out / "work" / "media"
    clips = min(clips, 60) if quick else clips
    n_test = max(10, clips // 4)
    spec = ClipSpec(seconds=2.0, fps=10, size=96)
    with timings("media: build + decode clips"):
        manifests = {}
        for split, count in (("train", clips - n_test), ("test", n_test)):
            rows = absolute_rows(read_jsonl(data / f"{split}.jsonl"), data, ("audio", "image"))
            built = build_clips(_balanced(rows, count), work / f"clips-{split}", spec, progress, desc=f"{split} clips")
            manifests[split] = write_jsonl(work / f"{split}.jsonl", built)
    say(f"built {clips} clips ({clips - n_test} train, {n_test} test): 2 s, 10 fps, 96x96 H.264 video with a slow "
        f"zoom, AAC audio; SRT subtitles; audio tracks decoded to WAV")
    epochs = 4 if quick else 12
    results = {}
    for label, loss in LOSSES.items():
        say(f"training the {label} model on video + audio + subtitles + text ({epochs} epochs) ...")
        with timings(f"media: train {label}"):
            path = train_model(media_config(manifests["train"], loss, epochs, seed), work / "runs" / run_name(label),
                               progress=progress)
        with timings(f"media: embed + search {label}"):
            model = load_model(path)
            emb = embed_manifest(model, manifests["test"])
            report = evaluate(model, emb, classes=list(WORDS), template="the digit {}")
            results[label] = (model, emb, report)
    table_rows = []
    first = next(iter(results.values()))[2]
    for key in first["nway"]:
        table_rows.append([key.replace("->", " → ")] + [
            f"{r[2]['nway'][key]['R@1']:.1f} / {r[2]['nway'][key]['mAP']:.1f}" for r in results.values()])
    for name in first["zeroshot"]:
        table_rows.append([f"zero-shot {name}"] + [f"{r[2]['zeroshot'][name]:.1f}" for r in results.values()])
    header = ["test clips (class level)"] + [f"{m} P@1 / mAP or accuracy %" for m in results]
    say("\nClips: n-way retrieval (volume) and zero-shot accuracy on the test clips (percent)")
    say(format_table(table_rows, header))
    searches = []
    for query in queries:
        for label, (model, emb, _) in results.items():
            rows = search(model, emb, query)
            search_header = ["rank", "clip", "digit", "volume", "correct"]
            say(f"\nsearch \"{query}\" with the {label} model (text vs (video, audio, subtitles) tuples, by volume):")
            say(format_table(rows, search_header))
            searches.append((query, label, rows, search_header))
    return {"clips": clips, "spec": "2 s, 10 fps, 96x96", "loss": f"{', '.join(LOSSES)} models, {epochs} epochs each",
            "table": (table_rows, header), "searches": searches,
            "reports": {label: r[2] for label, r in results.items()}}
