"""Short video clips built from the digits data: MP4 (H.264 + AAC, via PyAV) and SRT.

A clip shows one sign photo with a slow zoom (the "camera" moves in on the hand), carries
the spoken digit as its audio track and comes with an SRT file whose single cue is the
word. :func:`extract_audio` decodes a clip's audio track back into a WAV file, the way
GRAM's MSR-VTT pipeline extracts audio from videos before the audio encoder reads it.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

__all__ = ["ClipSpec", "write_clip", "write_srt", "extract_audio", "read_clip"]

VIDEO_CODEC = "libx264"  # H.264; FFmpeg inside PyAV wheels ships it
AUDIO_CODEC = "aac"  # FFmpeg's native AAC encoder


class ClipSpec:
    """Clip geometry and timing (defaults: 2 s, 10 fps, 96x96, zoom 1.0 -> 1.3)."""

    def __init__(self, seconds: float = 2.0, fps: int = 10, size: int = 96, zoom: float = 1.3,
                 audio_rate: int = 16000, audio_start: float = 0.4):
        if seconds <= 0 or fps <= 0 or size < 16 or size % 2 or zoom < 1:
            raise ValueError("need seconds > 0, fps > 0, an even size >= 16 and zoom >= 1")
        self.seconds, self.fps, self.size, self.zoom = seconds, fps, size, zoom
        self.audio_rate, self.audio_start = audio_rate, audio_start

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


def _zoom_frames(photo: Image.Image, spec: ClipSpec) -> list[np.ndarray]:
    """Frames of a slow zoom into the centre of ``photo``: [size, size, 3] uint8 each."""
    photo = photo.convert("RGB")
    w, h = photo.size
    side = min(w, h)
    out = []
    for k in range(spec.frames):
        z = 1 + (spec.zoom - 1) * k / max(1, spec.frames - 1)
        crop = side / z
        left, top = (w - crop) / 2, (h - crop) / 2
        box = (left, top, left + crop, top + crop)
        frame = photo.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=box)
        out.append(np.asarray(frame))
    return out


def _audio_track(audio_path: str | Path, spec: ClipSpec) -> np.ndarray:
    """The recording resampled to ``audio_rate``, placed at ``audio_start`` in a clip-long track."""
    data, rate = sf.read(str(audio_path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != spec.audio_rate:  # linear interpolation is plenty for speech at these rates
        t_new = np.arange(round(len(mono) * spec.audio_rate / rate)) / spec.audio_rate
        mono = np.interp(t_new, np.arange(len(mono)) / rate, mono).astype(np.float32)
    total = round(spec.seconds * spec.audio_rate)
    track = np.zeros(total, dtype=np.float32)
    start = min(round(spec.audio_start * spec.audio_rate), max(0, total - len(mono)))
    piece = mono[: total - start]
    track[start : start + len(piece)] = piece
    return track


def write_clip(photo_path: str | Path, audio_path: str | Path, out_path: str | Path,
               spec: ClipSpec | None = None) -> Path:
    """Write an MP4: the photo with a slow zoom (H.264) and the recording as AAC audio."""
    spec = spec or ClipSpec()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(photo_path) as photo:
        frames = _zoom_frames(photo, spec)
    track = _audio_track(audio_path, spec)
    with av.open(str(out_path), mode="w") as container:
        video = container.add_stream(VIDEO_CODEC, rate=spec.fps)
        video.width = video.height = spec.size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        audio = container.add_stream(AUDIO_CODEC, rate=spec.audio_rate)
        audio.layout = "mono"
        for array in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        chunk = audio.codec_context.frame_size or 1024
        for pts in range(0, len(track), chunk):
            piece = np.ascontiguousarray(track[pts : pts + chunk][None, :])
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
            frame.sample_rate = spec.audio_rate
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, spec.audio_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return out_path


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def write_srt(path: str | Path, text: str, start: float = 0.0, end: float = 2.0) -> Path:
    """An SRT file with one cue showing ``text`` from ``start`` to ``end`` seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"1\n{_timestamp(start)} --> {_timestamp(end)}\n{text}\n", encoding="utf-8")
    return path


def extract_audio(clip_path: str | Path, wav_path: str | Path) -> Path:
    """Decode the first audio stream of a clip into a mono 16-bit WAV file."""
    wav_path = Path(wav_path)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    samples, rate = [], None
    with av.open(str(clip_path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{clip_path}: no audio stream")
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            rate = frame.sample_rate
            array = frame.to_ndarray()
            if frame.format.is_planar:
                samples.append(array.mean(axis=0))
            else:  # interleaved: [1, n * channels]
                channels = len(frame.layout.channels)
                samples.append(array.reshape(-1, channels).mean(axis=1))
    if not samples:
        raise ValueError(f"{clip_path}: the audio stream holds no samples")
    sf.write(str(wav_path), np.concatenate(samples).astype(np.float32), rate, subtype="PCM_16")
    return wav_path


def read_clip(clip_path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode a whole clip: ``(frames [T, H, W, 3] uint8, mono audio float32, sample rate)``."""
    frames, audio, rate = [], [], 0
    with av.open(str(clip_path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    with av.open(str(clip_path)) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            audio.append(frame.to_ndarray().mean(axis=0))
    return np.stack(frames), np.concatenate(audio).astype(np.float32), rate
