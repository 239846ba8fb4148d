"""Tests of the gramx-subtitles plugin: parsing, markup, windows, bad files, conformance, discovery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import torch

import gramx
from gramx.cli.app import main as gramx_main
from gramx.testing import check_modality, fresh_host, run_in_host
from gramx_subtitles import SUBTITLES, SubtitlesConfig, clean_cue_text, load_subtitles, read_cues
from gramx_text.encoder import build_text_encoder, collate_texts
from gramx_text.testing import save_tiny_bert

SRT = """\
1
00:00:01,000 --> 00:00:04,000
<i>Where were you last night?</i>

2
00:00:04,500 --> 00:00:07,250
{\\an8}<font color="#ff0000">I was at the</font>
<b>lighthouse</b>, fixing the lamp.

3
00:00:08,000 --> 00:00:10,000
- Alone?
- With the keeper&#39;s dog.

4
00:00:30,000 --> 00:00:33,000
The storm arrived after midnight.
"""

VTT = """\
WEBVTT - an episode

NOTE This comment is not a cue.

STYLE
::cue(.red) { color: red; }

1
00:00:01.000 --> 00:00:04.000 position:10% align:start
<v Anna>Where were you last night?</v>

2
00:04.500 --> 00:07.250
<v.loud Ben>I was at the <c.red>lighthouse</c>,</v>
<i>fixing</i> the <00:00:06.000>lamp.

3
00:00:08.000 --> 00:00:10.000
<ruby>灯台<rt>とうだい</rt></ruby> &amp; a dog &lt;Rex&gt;

00:00:30.000 --> 00:00:33.000
The storm arrived after midnight.
"""

EXPECTED_FIRST_TEN_SECONDS_SRT = (
    "Where were you last night? I was at the lighthouse, fixing the lamp. - Alone? - With the keeper's dog."
)


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    paths = {"srt": tmp_path / "episode.srt", "vtt": tmp_path / "episode.vtt"}
    paths["srt"].write_text(SRT, encoding="utf-8")
    paths["vtt"].write_text(VTT, encoding="utf-8")
    return paths


def load(value, **options) -> str:
    return load_subtitles(value, SubtitlesConfig(**options))


# --- parsing and markup -------------------------------------------------------------------


def test_srt_cues_have_times_and_clean_multiline_text(files):
    cues = read_cues(files["srt"])
    assert [(c.start, c.end) for c in cues] == [(1.0, 4.0), (4.5, 7.25), (8.0, 10.0), (30.0, 33.0)]
    assert cues[1].text == "I was at the lighthouse, fixing the lamp."
    assert cues[2].text == "- Alone? - With the keeper's dog."


def test_vtt_cues_drop_voice_class_ruby_and_timestamp_tags(files):
    cues = read_cues(files["vtt"])
    assert [(c.start, c.end) for c in cues] == [(1.0, 4.0), (4.5, 7.25), (8.0, 10.0), (30.0, 33.0)]
    assert [c.text for c in cues[:3]] == [
        "Where were you last night?",
        "I was at the lighthouse, fixing the lamp.",
        "灯台 & a dog <Rex>",
    ]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<i>a</i> <b>b</b> <u>c</u>", "a b c"),
        ('<font face="Arial" color="#ffffff">x</font>', "x"),
        ("{\\an8}top {\\i1}italic{\\i0}", "top italic"),
        ("<v Roger Bingham>We are in New York City", "We are in New York City"),
        ("a &lt; b &amp;&amp; c &gt; d&nbsp;e", "a < b && c > d e"),
        ("\u200eline one\n  line   two\n", "line one line two"),
    ],
)
def test_clean_cue_text(raw, clean):
    assert clean_cue_text(raw) == clean


def test_whole_file_is_one_string(files):
    assert load(files["srt"]) == EXPECTED_FIRST_TEN_SECONDS_SRT + " The storm arrived after midnight."
    assert load(files["vtt"]).startswith("Where were you last night? I was at the lighthouse, fixing the lamp.")


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "windows.srt"
    path.write_bytes(b"\xef\xbb\xbf" + SRT.replace("\n", "\r\n").encode("utf-8"))
    assert load(path) == EXPECTED_FIRST_TEN_SECONDS_SRT + " The storm arrived after midnight."


def test_repeated_rollup_lines_are_kept_once(tmp_path):
    path = tmp_path / "rollup.vtt"
    path.write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nhello\n\n00:02.000 --> 00:03.000\nhello\n\n"
                    "00:03.000 --> 00:04.000\nworld\n", encoding="utf-8")
    assert load(path) == "hello world"


# --- time windows ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_window_from_a_mapping_value(files, kind):
    path = str(files[kind])
    first_ten = load({"path": path, "start": 0, "end": 10})
    assert first_ten == EXPECTED_FIRST_TEN_SECONDS_SRT if kind == "srt" else first_ten.endswith("灯台 & a dog <Rex>")
    # Overlap, half-open: a cue ending exactly at start is out, one starting exactly at end is out.
    assert load({"path": path, "start": 4.0, "end": 8.0}) == "I was at the lighthouse, fixing the lamp."
    assert load({"path": path, "start": 29}) == "The storm arrived after midnight."
    assert load({"path": path, "end": 4.2}) == "Where were you last night?"


def test_window_as_media_fragment(files):
    assert load(f"{files['srt']}#t=4,8") == "I was at the lighthouse, fixing the lamp."
    assert load(f"{files['srt']}#t=29") == "The storm arrived after midnight."
    assert load(f"{files['srt']}#t=,4.2") == "Where were you last night?"


def test_config_window_is_the_default_and_a_value_window_replaces_it(files):
    assert load(files["srt"], start=29.0) == "The storm arrived after midnight."
    assert load({"path": str(files["srt"])}, end=4.2) == "Where were you last night?"
    assert load({"path": str(files["srt"]), "start": 0, "end": 4.2}, start=29.0) == "Where were you last night?"


def test_config_window_must_be_ordered():
    with pytest.raises(pydantic.ValidationError, match="after start"):
        SubtitlesConfig(start=5, end=2)
    with pytest.raises(pydantic.ValidationError):
        SubtitlesConfig(start=-1)
    with pytest.raises(pydantic.ValidationError, match="windw"):
        SubtitlesConfig.model_validate({"windw": 3})


# --- bad inputs -----------------------------------------------------------------------------

BAD_FILES = {
    "cp1252.srt": "1\n00:00:01,000 --> 00:00:02,000\nCaf\xe9 cr\xe8me\n".encode("cp1252"),
    "utf16.vtt": "WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n".encode("utf-16"),
    "garbage.srt": b"this is not a subtitle file\nat all\n",
    "bad-time.srt": b"1\n00:00:01,000 --> 00:00:xx,000\nhello\n",
    "no-header.vtt": b"00:01.000 --> 00:02.000\nhello\n",
    "bad-cue.vtt": b"WEBVTT\n\n00:00:01.000 --> 00:00:0x.000\nhello\n",
    "notes.txt": SRT.encode(),
    "no-extension": SRT.encode(),
    "empty.srt": b"",
    "header-only.vtt": b"WEBVTT\n\nNOTE nothing here\n",
    "markup-only.srt": b"1\n00:00:01,000 --> 00:00:02,000\n<i></i>{\\an8}\n",
}
PROBLEMS = {
    "cp1252.srt": "not UTF-8",
    "utf16.vtt": "not UTF-8",
    "garbage.srt": "malformed SRT",
    "bad-time.srt": "malformed SRT",
    "no-header.vtt": "WEBVTT",
    "bad-cue.vtt": "malformed WebVTT",
    "notes.txt": "unsupported subtitle format '.txt'",
    "no-extension": "unsupported subtitle format",
    "empty.srt": "no subtitle cues",
    "header-only.vtt": "no subtitle cues",
    "markup-only.srt": "no subtitle text",
}


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    paths = {}
    for name, data in BAD_FILES.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    (tmp_path / "folder.srt").mkdir()
    paths["folder.srt"] = tmp_path / "folder.srt"
    paths["missing.srt"] = tmp_path / "missing.srt"
    return paths


@pytest.mark.parametrize("name", [*BAD_FILES, "folder.srt", "missing.srt"])
def test_bad_files_raise_load_error_naming_the_file(bad_files, name):
    with pytest.raises(gramx.LoadError) as info:
        load(bad_files[name])
    message = str(info.value)
    assert name in message
    assert PROBLEMS.get(name, "") in message
    assert {"folder.srt": "directory", "missing.srt": "no such"}.get(name, "") in message


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"start": 100, "end": 200}, "no subtitle text between 100 s and 200 s"),
        ({"start": 10.5, "end": 29}, "no subtitle text between 10.5 s and 29 s"),
        ({"start": -1}, "start must be a number"),
        ({"start": "12"}, "start must be a number"),
        ({"end": True}, "end must be a number"),
        ({"start": 5, "end": 5}, "must be after its start"),
        ({"start": 1, "speed": 2}, "unknown key(s) speed"),
    ],
)
def test_bad_windows_raise_load_error_naming_the_file(files, window, problem):
    with pytest.raises(gramx.LoadError) as info:
        load({"path": str(files["srt"]), **window})
    assert "episode.srt" in str(info.value)
    assert problem in str(info.value)


def test_empty_window_in_fragment_and_config(files):
    with pytest.raises(gramx.LoadError, match=r"episode\.vtt.*no subtitle text between 11 s and 12 s"):
        load(f"{files['vtt']}#t=11,12")
    with pytest.raises(gramx.LoadError, match=r"episode\.srt.*between 40 s and the end"):
        load(files["srt"], start=40.0)


@pytest.mark.parametrize("value", [42, None, {"start": 1}, {"path": 3}, ["a.srt"], ""])
def test_values_that_are_not_paths(value):
    with pytest.raises(gramx.LoadError):
        load(value)


# --- encoding and the conformance kit -------------------------------------------------------


def test_conformance_on_written_files_windows_and_bad_inputs(files, bad_files, tmp_path):
    """The kit on the files written above, with a tiny random BERT loaded from a directory (fast)."""
    cfg = SubtitlesConfig(model=save_tiny_bert(tmp_path / "tiny-bert"), max_length=64)
    samples = [str(files["srt"]), str(files["vtt"]), {"path": str(files["srt"]), "start": 4, "end": 8}]
    bad = [str(bad_files[name]) for name in ("cp1252.srt", "garbage.srt", "no-header.vtt", "notes.txt", "empty.srt")]
    assert check_modality(SUBTITLES, samples, bad_inputs=bad, cfg=cfg)


def test_shipped_samples_exist_and_load():
    assert len(SUBTITLES.samples) == 2
    for sample in SUBTITLES.samples:
        assert Path(sample).is_file()
        assert len(load(sample).split()) > 10


def test_subtitles_encode_like_the_same_text(files):
    cfg = SubtitlesConfig()
    encoder = build_text_encoder(cfg).eval()
    text = load({"path": str(files["srt"]), "start": 4, "end": 8})
    with torch.no_grad():
        via_subtitles = encoder(SUBTITLES.make_batch([text], cfg))
        via_text = encoder(collate_texts(["I was at the lighthouse, fixing the lamp."], cfg))
    torch.testing.assert_close(via_subtitles, via_text)
    assert encoder.feature_dim == 384


def test_freeze_and_model_options_come_from_gramx_text(tmp_path):
    from gramx_text.encoder import TextEncoderConfig

    assert issubclass(SubtitlesConfig, TextEncoderConfig)
    encoder = build_text_encoder(SubtitlesConfig(freeze=True)).train()
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(gramx.ConfigError, match="no such directory"):
        build_text_encoder(SubtitlesConfig(model=str(tmp_path / "absent")))


def test_gramx_plugins_check_needs_no_arguments(capsys):
    """`gramx plugins check subtitles` runs the conformance kit on the shipped samples (default MiniLM)."""
    assert gramx_main(["plugins", "check", "subtitles"]) == 0
    assert "subtitles: conforms" in capsys.readouterr().out


def test_a_manifest_with_text_and_windowed_subtitles_batches(files, tmp_path):
    """Through the core's manifest dataset: relative `#t=` paths resolve, missing rows are masked."""
    from gramx.data.loading import Collator, ManifestDataset
    from gramx.data.manifest import read_manifest
    from gramx_text import TEXT, TextConfig

    rows = [
        {"id": "a", "text": "at the lighthouse", "subtitles": "episode.srt#t=4,8"},
        {"id": "b", "text": "a storm at night", "subtitles": "episode.vtt#t=29,40"},
        {"id": "c", "text": "no subtitles for this one"},
        {"id": "d", "text": "out of range", "subtitles": "episode.srt#t=100,110"},
    ]
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    model = save_tiny_bert(tmp_path / "tiny-bert")
    mods = {"text": (TEXT, TextConfig(model=model, max_length=64)),
            "subtitles": (SUBTITLES, SubtitlesConfig(model=model, max_length=64))}
    dataset = ManifestDataset(read_manifest(manifest), mods)
    batch = Collator(mods)([dataset[i] for i in range(len(rows))])

    assert batch["masks"]["subtitles"].tolist() == [True, True, False]
    assert batch["inputs"]["subtitles"]["input_ids"].shape[0] == 2
    assert batch["inputs"]["text"]["input_ids"].shape[0] == 3
    [(line, message)] = batch["errors"]
    assert line == 4 and "episode.srt" in message and "no subtitle text between 100 s and 110 s" in message
    encoder = build_text_encoder(mods["subtitles"][1])
    assert encoder(batch["inputs"]["subtitles"]).shape == (2, 32)


def test_relative_paths_inside_mapping_values_resolve_against_the_manifest(files, tmp_path, monkeypatch):
    """`{"path": "data/a.srt", "start": 1}` loads like the string form, wherever the process runs."""
    from gramx.data.loading import ManifestDataset
    from gramx.data.manifest import read_manifest

    folder = tmp_path / "set"
    (folder / "data").mkdir(parents=True)
    shutil.copy(files["srt"], folder / "data" / "a.srt")
    rows = [{"subtitles": {"path": "data/a.srt", "start": 4, "end": 8}}, {"subtitles": "data/a.srt#t=4,8"}]
    (folder / "m.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    dataset = ManifestDataset(read_manifest(folder / "m.jsonl"), {"subtitles": (SUBTITLES, SubtitlesConfig())})
    assert dataset.value(dataset.manifest.rows[0], "subtitles") == {
        "path": str(folder / "data" / "a.srt"), "start": 4, "end": 8}
    first, second = dataset[0], dataset[1]
    assert first["error"] is None and second["error"] is None
    assert first["values"]["subtitles"] == second["values"]["subtitles"] != ""


# --- discovery ------------------------------------------------------------------------------


def test_runs_through_the_host(tmp_path):
    """Discovered through its entry point, trained two steps on the shipped samples, saved and loaded."""
    run = run_in_host("subtitles", tmp_path, distribution="gramx-subtitles")
    assert run.status.modalities == ["subtitles"] and run.embeddings.shape == (4, 8)
    with fresh_host() as host:
        assert host.provider("text").distribution == "gramx-text" and host.get_modality("subtitles") is SUBTITLES


@pytest.mark.slow
def test_gramx_plugins_list_shows_text_and_subtitles():
    script = Path(sys.executable).with_name("gramx")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gramx"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("GRAMX_DISABLE_PLUGINS", None)
    result = subprocess.run([*command, "plugins", "list", "--json"], capture_output=True, text=True, env=env,
                            timeout=120, check=True)
    rows = {row["plugin"]: row for row in json.loads(result.stdout)}
    assert rows["text"]["modalities"] == ["text"] and rows["text"]["status"] == "ok"
    assert rows["subtitles"]["modalities"] == ["subtitles"] and rows["subtitles"]["status"] == "ok"
