"""gramx plugin: the ``subtitles`` modality (SRT and WebVTT files).

A manifest value names a subtitle file, optionally with a time window so a clip gets only
its own lines:

- ``"clips/ep1.srt"``: every cue (or the config's ``start``/``end`` window);
- ``{"path": "clips/ep1.srt", "start": 12.0, "end": 19.5}``: the cues overlapping that window;
- ``"clips/ep1.srt#t=12,19.5"``: the same window as a media-fragment suffix, which also fits
  CSV manifests.

Relative paths, in either form, resolve against the manifest's folder (:func:`resolve_value`).

The cues' text, markup removed, is joined into one string and encoded with the machinery of
``gramx-text`` (same ``model``/``max_length``/``pooling``/``freeze`` options).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

import gramx
from gramx.plugins.modality import resolve_path
from gramx_subtitles.parse import Cue, clean_cue_text, cues_in_window, read_cues, window_text
from gramx_text.encoder import TextEncoderConfig, build_text_encoder, collate_texts

__all__ = [
    "SUBTITLES",
    "SubtitlesConfig",
    "load_subtitles",
    "resolve_value",
    "Cue",
    "read_cues",
    "clean_cue_text",
    "gramx_register_modalities",
]

__version__ = "0.1.0"

_SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
_FRAGMENT = re.compile(r"^(?P<path>.+)#t=(?P<start>\d+(?:\.\d+)?)?(?:,(?P<end>\d+(?:\.\d+)?))?$")
_VALUE_KEYS = {"path", "start", "end"}


class SubtitlesConfig(TextEncoderConfig):
    """Options of the ``subtitles`` modality: the text-encoder options plus a default window."""

    max_length: int = pydantic.Field(256, ge=2, description="tokens kept per window; longer text is truncated")
    start: float | None = pydantic.Field(
        None, ge=0, description="default window start in seconds, for values that give no window"
    )
    end: float | None = pydantic.Field(
        None, gt=0, description="default window end in seconds, for values that give no window"
    )

    @pydantic.model_validator(mode="after")
    def _window_is_ordered(self) -> SubtitlesConfig:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(path: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise gramx.LoadError(path, f"window {key} must be a number of seconds >= 0, got {_shown(value)}")
    return float(value)


def _window(path: str, start: Any, end: Any) -> tuple[float | None, float | None]:
    start, end = _seconds(path, "start", start), _seconds(path, "end", end)
    if start is not None and end is not None and end <= start:
        raise gramx.LoadError(path, f"window end ({end:g} s) must be after its start ({start:g} s)")
    return start, end


def parse_value(value: Any, cfg: SubtitlesConfig) -> tuple[Path, float | None, float | None]:
    """A manifest value -> (file, window start, window end); a window in the value replaces the config's."""
    if isinstance(value, Mapping):
        path = value.get("path")
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise gramx.LoadError(_shown(value), "a subtitles value given as a mapping needs a 'path'")
        unknown = sorted(set(map(str, value)) - _VALUE_KEYS)
        if unknown:
            raise gramx.LoadError(path, f"unknown key(s) {', '.join(unknown)} in the subtitles value; use path, start, end")
        if "start" in value or "end" in value:
            return Path(path), *_window(str(path), value.get("start"), value.get("end"))
        return Path(path), cfg.start, cfg.end
    if isinstance(value, (str, os.PathLike)) and str(value):
        path = Path(value)
        match = _FRAGMENT.match(str(value))
        if match and not path.exists():
            start, end = match["start"], match["end"]
            return Path(match["path"]), *_window(match["path"], start and float(start), end and float(end))
        return path, cfg.start, cfg.end
    raise gramx.LoadError(
        _shown(value),
        f"expected a path to an .srt/.vtt file or {{'path': ..., 'start': s, 'end': s}}, got {type(value).__name__}",
    )


def _span(start: float | None, end: float | None) -> str:
    return f"{0 if start is None else start:g} s and {'the end' if end is None else f'{end:g} s'}"


def load_subtitles(value: Any, cfg: SubtitlesConfig) -> str:
    """One manifest value -> the text of the cues in its window, as one string.

    Raises :class:`gramx.LoadError` naming the file when it is missing, unreadable, not
    UTF-8, malformed, of an unknown format, or has no text in the window (an empty
    window is an error, not an empty string: leave the key out for clips without subtitles).
    """
    path, start, end = parse_value(value, cfg)
    cues = read_cues(path)
    if not cues:
        raise gramx.LoadError(path, "no subtitle cues in the file")
    text = window_text(cues_in_window(cues, start, end))
    if not text:
        raise gramx.LoadError(
            path,
            f"no subtitle text between {_span(start, end)}",
            hint="leave the subtitles key out (or null) for tuples without subtitles",
        )
    return text


def resolve_value(value: Any, root: Path) -> Any:
    """A manifest value with its file path made absolute against ``root`` (mappings keep their window)."""
    if isinstance(value, Mapping) and isinstance(value.get("path"), (str, os.PathLike)):
        return {**value, "path": resolve_path(value["path"], root)}
    return resolve_path(value, root)


SUBTITLES = gramx.Modality(
    name="subtitles",
    load=load_subtitles,
    build_encoder=build_text_encoder,
    config=SubtitlesConfig,
    collate=collate_texts,
    description="SRT / WebVTT subtitles (optionally a time window), encoded as text (gramx-text)",
    value_is_path=True,
    samples=(str(_SAMPLES_DIR / "sample.srt"), str(_SAMPLES_DIR / "sample.vtt")),
    resolve=resolve_value,
)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(SUBTITLES)
