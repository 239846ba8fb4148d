"""Reading SRT and WebVTT files into cues, cleaning cue text and cutting a time window.

Every problem with a file raises :class:`gramx.LoadError` naming the file.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

from gramx.errors import LoadError

__all__ = ["Cue", "SUFFIXES", "read_cues", "clean_cue_text", "cues_in_window", "window_text"]

SUFFIXES = (".srt", ".vtt")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: times in seconds and its cleaned text."""

    start: float
    end: float
    text: str


# {\an8}, {\i1}, {\c&H00FFFF&}: ASS/SSA override blocks that SRT files often carry.
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")
# <rt>...</rt>: ruby annotations (pronunciation over the base text), not part of what is said.
_RUBY_TEXT = re.compile(r"<rt\b[^<>]*>.*?</rt\s*>", re.IGNORECASE | re.DOTALL)
# <i>, </b>, <font color="#fff">, <v.loud Esme>, <c.yellow>, <lang en>, <00:00:01.500>.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<(?:\d+:)?\d{2}:\d{2}\.\d{3}>")
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060\ufeff]")
_SPACE = re.compile(r"\s+")


def clean_cue_text(raw: str) -> str:
    """Cue text without markup, entities decoded, lines joined by single spaces."""
    text = _ASS_OVERRIDE.sub("", raw)
    text = _RUBY_TEXT.sub("", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)  # after the tags: "&lt;i&gt;" is text, not a tag
    text = _INVISIBLE.sub("", text)
    return _SPACE.sub(" ", text).strip()


def _shorten(text: str, limit: int = 120) -> str:
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoadError(path, "no such subtitle file") from None
    except IsADirectoryError:
        raise LoadError(path, "is a directory, not a subtitle file") from None
    except OSError as exc:
        raise LoadError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(
            path,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="re-encode the file as UTF-8, e.g. iconv -f cp1252 -t utf-8 in.srt > out.srt",
        ) from None


def _parse_srt(path: Path, text: str) -> list[Cue]:
    import srt

    try:
        subtitles = list(srt.parse(text))
    except (srt.SRTParseError, ValueError) as exc:
        raise LoadError(path, f"malformed SRT: {_shorten(exc)}") from None
    return [Cue(s.start.total_seconds(), s.end.total_seconds(), clean_cue_text(s.content)) for s in subtitles]


def _parse_vtt(path: Path, text: str) -> list[Cue]:
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    try:
        captions = webvtt.WebVTT.from_string(text, strict=True).captions
    except MalformedFileError:
        raise LoadError(path, "malformed WebVTT: the file must start with a 'WEBVTT' line") from None
    except (MalformedCaptionError, ValueError) as exc:
        raise LoadError(path, f"malformed WebVTT: {_shorten(exc)}") from None
    return [
        Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, clean_cue_text(c.raw_text))
        for c in captions
    ]


def read_cues(path: str | Path) -> list[Cue]:
    """The cues of an ``.srt`` or ``.vtt`` file (UTF-8), in time order, text cleaned."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LoadError(
            path,
            f"unsupported subtitle format {suffix or '(no extension)'!r}; expected {' or '.join(SUFFIXES)}",
            hint="convert it first, e.g. ffmpeg -i in.ass out.srt",
        )
    text = _decode(path)
    cues = _parse_srt(path, text) if suffix == ".srt" else _parse_vtt(path, text)
    return sorted(cues, key=lambda cue: (cue.start, cue.end))


def cues_in_window(cues: list[Cue], start: float | None = None, end: float | None = None) -> list[Cue]:
    """The cues that overlap ``[start, end)`` seconds (``None``: open on that side)."""
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    return [cue for cue in cues if cue.start < hi and (cue.end > lo or cue.start >= lo)]


def window_text(cues: list[Cue]) -> str:
    """The cues' texts joined by spaces; empty cues and immediate repeats (roll-up captions) left out."""
    texts: list[str] = []
    for cue in cues:
        if cue.text and (not texts or texts[-1] != cue.text):
            texts.append(cue.text)
    return " ".join(texts)
