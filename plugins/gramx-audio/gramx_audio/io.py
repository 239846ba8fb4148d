"""Reading audio files: decode, check, mix to mono, resample, crop or pad."""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from gramx import LoadError

__all__ = ["read_audio", "resample", "fit_length"]


def _check_riff(path: Path, data: bytes, size: int) -> None:
    """A WAV whose header promises more bytes than the file holds was cut short.

    libsndfile silently reads what is there, so truncation is only visible in the header.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return
    fmt = "<I" if data[:4] == b"RIFF" else ">I"
    declared = struct.unpack(fmt, data[4:8])[0]
    if declared in (0, 0xFFFFFFFF):  # streaming writers leave the size open
        return
    if declared + 8 > size + 1:  # +1: a missing pad byte is harmless
        raise LoadError(path, f"WAV file is truncated: its header declares {declared + 8} bytes, the file has {size}")


def read_audio(value: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``value`` into mono float32 samples and their sample rate.

    Raises :class:`gramx.LoadError` naming the file when it is missing, cannot be decoded,
    is truncated, holds no samples or holds non-finite samples.
    """
    if not isinstance(value, str | os.PathLike):
        raise LoadError(repr(value), f"expected an audio file path, got {type(value).__name__}")
    path = Path(value)
    if not path.exists():
        raise LoadError(path, "file not found")
    if not path.is_file():
        raise LoadError(path, "not a file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
        _check_riff(path, head, path.stat().st_size)
        with sf.SoundFile(path) as f:
            declared, rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except LoadError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        problem = getattr(exc, "error_string", None) or str(exc)
        raise LoadError(path, f"cannot decode audio: {problem}") from exc
    if data.shape[0] == 0:
        raise LoadError(path, "contains no audio samples")
    if 0 < data.shape[0] < declared:
        raise LoadError(path, f"audio is truncated: the header declares {declared} frames, {data.shape[0]} could be read")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise LoadError(path, "contains NaN or infinite samples")
    return np.ascontiguousarray(mono), rate


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig, new)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample a 1-D waveform from ``orig`` Hz to ``new`` Hz (windowed sinc, torchaudio)."""
    if orig == new:
        return wave
    with torch.no_grad():
        return _resampler(orig, new)(wave)


def fit_length(wave: torch.Tensor, length: int, mode: str = "center") -> tuple[torch.Tensor, int, int]:
    """Crop or zero-pad ``wave`` to ``length`` samples.

    :param mode: ``"center"``, ``"start"`` or ``"random"``: where the clip sits in the
        window (longer clips: which part is kept; shorter clips: where the padding goes).
    :return: ``(fitted, start, stop)``; samples ``start:stop`` of ``fitted`` are real audio.
    """
    n = wave.shape[-1]
    slack = abs(n - length)
    if mode == "center":
        offset = slack // 2
    elif mode == "start":
        offset = 0
    elif mode == "random":
        offset = int(torch.randint(0, slack + 1, ()).item())
    else:
        raise ValueError(f"unknown crop mode {mode!r}")
    if n >= length:
        return wave[offset : offset + length], 0, length
    out = wave.new_zeros(length)
    out[offset : offset + n] = wave
    return out, offset, offset + n
