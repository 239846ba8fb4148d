"""`gramx demo --quick` end to end, and the clip builder (MP4 + SRT) on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import soundfile as sf

from gramx_demo.clips import ClipSpec, extract_audio, read_clip, write_clip, write_srt
from gramx_demo.common import LOSSES, default_data_dir
from gramx_demo.objectives import TASKS

DATA = default_data_dir()
PHOTO = DATA / "image" / "0_img_5266.jpg"
RECORDING = DATA / "audio" / "0_nicolas_24.flac"


def test_demo_command_is_registered():
    from gramx.cli.app import build_parser

    args = build_parser().parse_args(["demo", "--quick", "-o", "somewhere"])
    assert args.quick and args.stage == ("digits", "objectives") and callable(args.func)


def test_the_scratch_run_files_start_from_nothing():
    from gramx.train.config import load_config

    scratch = {task: load_config(TASKS[task][0]) for task in TASKS if task.endswith("-scratch")}
    assert set(scratch) == {"composition-scratch", "modsum-scratch"}
    assert all(config.init is None and not TASKS[task][1] for task, config in scratch.items())
    assert all(m.head.batch_norm for m in scratch["modsum-scratch"].modalities.values())  # no modality collapses


def test_class_prompt_labels_never_overlap():
    """The GRAM model may put several class prompts on one spot; their labels are spread apart."""
    from gramx_demo.plots import spread_labels

    anchors = np.array([[0.0, 0.0]] * 6 + [[0.01, 0.0], [5.0, 5.0]])
    placed = spread_labels(anchors, gap=0.5)
    distances = np.linalg.norm(placed[:, None] - placed[None], axis=-1) + np.eye(len(anchors)) * 9
    assert distances.min() >= 0.5 * 0.999
    assert np.linalg.norm(placed[-1] - anchors[-1]) < 0.5  # a label with room stays by its star


@pytest.mark.slow
def test_the_demo_refuses_a_report_folder_it_did_not_make(tmp_path):
    taken = tmp_path / "mine"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "gramx", "demo", "--quick", "-o", str(taken)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "does not replace it" in proc.stderr and "--overwrite" in proc.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One `gramx demo --quick` run, in its own process (it sets torch's thread count)."""
    out = tmp_path_factory.mktemp("demo") / "report"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gramx", "demo", "--quick", "--no-progress", "--map", "pca", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout, time.perf_counter() - started


def test_quick_demo_writes_report_and_figures(quick_report):
    out, stdout, _ = quick_report
    report = (out / "report.md").read_text()
    for name in ("training-curves", "embedding-map", "volume-histograms", "zeroshot"):
        png = out / "figures" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}.png" in report  # embedded in report.md
    for heading in ("Zero-shot classification", "Class-level retrieval", "N-way retrieval", "Timing"):
        assert heading in report
        assert heading in stdout


def test_quick_demo_indexes_the_test_split_and_says_how_to_serve_it(quick_report):
    from gramx.index.reader import EmbeddingIndex

    out, stdout, _ = quick_report
    command = stdout.split("search the digits test split in a browser", 1)[1].splitlines()[1].split()
    assert command[:2] == ["gramx", "serve"] and f"```\n{' '.join(command)}\n```" in (out / "report.md").read_text()
    model, index, media = command[2], command[command.index("--index") + 1], command[command.index("--media") + 1]
    assert model.startswith(str(out)) and media == str(DATA)
    opened = EmbeddingIndex.load(index)
    results = json.loads((out / "results.json").read_text())
    assert results["digits"]["serve"] == " ".join(command)
    assert len(opened) == results["digits"]["test_tuples"] and opened.sources[0].parent.is_dir()


def test_quick_demo_metrics_far_above_chance(quick_report):
    out, _, _ = quick_report
    results = json.loads((out / "results.json").read_text())
    digits = results["digits"]
    assert {"audio", "image", "text"} <= set(digits["modalities"])
    assert set(digits["models"]) == set(LOSSES)
    others = ",".join(sorted(n for n in digits["modalities"] if n != "text"))
    # chance is 10% for zero-shot and P@1 (ten balanced classes)
    # (the quick run trains 36 steps; the GRAM model's audio lags most at that budget)
    for name, audio in (("pairwise", 30), ("GRAM + warm-up", 20)):
        model = digits["models"][name]
        assert model["zeroshot"]["audio"] > audio, name
        assert model["zeroshot"]["image"] > 30, name
        assert model["retrieval"]["text->image"]["R@1"] > 40, name
        assert model["nway"][f"text->({others})"]["R@1"] > 40, name
    # every model is evaluated on the same pairs, with cosine-sum n-way scores next to volume ones
    pairwise = digits["models"]["pairwise"]
    for model in digits["models"].values():
        assert set(model["retrieval"]) == set(pairwise["retrieval"])
        assert set(model["nway_cosine"]) == set(model["nway"])
        for metrics in model["retrieval"].values():
            assert 0 <= metrics["mAP"] <= 100


def test_quick_demo_is_quick(quick_report):
    _, _, seconds = quick_report
    assert seconds < 300, f"the quick demo took {seconds:.0f} s"


def test_clip_decodes_to_frames_and_audio(tmp_path):
    spec = ClipSpec(seconds=1.0, fps=8, size=64)
    clip = write_clip(PHOTO, RECORDING, tmp_path / "clip.mp4", spec)
    with av.open(str(clip)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    frames, audio, rate = read_clip(clip)
    assert frames.shape == (spec.frames, 64, 64, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])  # the zoom moves
    assert rate == spec.audio_rate
    assert abs(len(audio) / rate - spec.seconds) < 0.2
    source, source_rate = sf.read(RECORDING, dtype="float32")
    assert np.abs(audio).max() > 0.3 * np.abs(source).max()  # the recording is in the track
    wav = extract_audio(clip, tmp_path / "clip.wav")
    decoded, wav_rate = sf.read(wav, dtype="float32")
    assert wav_rate == rate and abs(len(decoded) - len(audio)) <= 1


def test_clip_loads_with_the_video_plugin(tmp_path):
    from gramx_video import VideoConfig, load_video

    clip = write_clip(PHOTO, RECORDING, tmp_path / "clip.mp4", ClipSpec(seconds=1.0, fps=8, size=64))
    video = load_video(clip, VideoConfig(size=32, num_frames=4))
    assert tuple(video.shape) == (4, 3, 32, 32)


def test_srt_parses(tmp_path):
    from gramx_subtitles import SubtitlesConfig, load_subtitles, read_cues

    srt = write_srt(tmp_path / "clip.srt", "seven", 0.0, 2.0)
    cues = read_cues(srt)
    assert len(cues) == 1 and cues[0].start == 0.0 and cues[0].end == 2.0
    assert load_subtitles(srt, SubtitlesConfig()) == "seven"


@pytest.mark.slow
def test_quick_media_and_shapes_stages(tmp_path):
    """The clips and 3-D stages end to end on tiny data (about a minute)."""
    out = tmp_path / "report"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    stdout = {}
    for stage in ("media", "shapes"):
        proc = subprocess.run(
            [sys.executable, "-m", "gramx", "demo", "--stage", stage, "--quick", "--no-progress", "-o", str(out)],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        stdout[stage] = proc.stdout
        results = json.loads((out / "results.json").read_text())
        assert set(results[stage]["models"]) == set(LOSSES)
        assert results[stage]["models"]["pairwise"]["nway"]  # n-way volume retrieval ran
        if stage == "media":
            clips = sorted((out / "work" / "media" / "clips-test").glob("*.mp4"))
            assert clips and all(c.with_suffix(".srt").is_file() and c.with_suffix(".wav").is_file() for c in clips)
    assert 'search "seven" with the GRAM + warm-up model' in stdout["media"]
    assert "rank  clip" in stdout["media"]  # a ranked result table
    report = (out / "report.md").read_text()  # the second run replaced the first run's report
    assert "3-D shapes" in report and not (out / "work" / "media").exists()
