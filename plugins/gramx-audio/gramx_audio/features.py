"""Features computed from a fixed-length mono waveform."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torchaudio

from gramx_audio.config import AudioConfig

__all__ = ["compute_features", "TOP_DB"]

TOP_DB = 80.0  # spectrogram values more than this far below the clip's peak are floored
_EPS = 1e-10


@lru_cache(maxsize=8)
def _mel(sample_rate: int, win_length: int, hop_length: int, n_mels: int) -> torchaudio.transforms.MelSpectrogram:
    n_fft = 1 << max(0, (win_length - 1).bit_length())
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels, power=2.0
    )


def _valid_frames(start: int, stop: int, total: int, frames: int, hop: int, first_center: float) -> slice:
    """Frames whose centre lies on real (unpadded) samples ``start:stop`` of ``total``; at least one."""
    lo = 0 if start <= 0 else math.ceil((start - first_center) / hop)
    hi = frames if stop >= total else math.ceil((stop - first_center) / hop)
    lo, hi = max(0, min(lo, frames - 1)), min(frames, hi)
    return slice(lo, max(hi, lo + 1))


def _normalize(x: torch.Tensor, valid: slice) -> torch.Tensor:
    real = x[..., valid]
    return (x - real.mean()) / (real.std(unbiased=False) + 1e-5)


def compute_features(wave: torch.Tensor, start: int, stop: int, cfg: AudioConfig) -> torch.Tensor:
    """``wave`` (``[num_samples]``, real audio in ``start:stop``) -> the configured features.

    - ``logmel`` / ``fbank``: ``[1, n_mels, frames]``, in dB-like log units floored
      ``TOP_DB`` below the clip's peak, normalised over the real frames when ``normalize``.
    - ``waveform``: ``[num_samples]``, normalised over the real samples, padding kept at 0.
    """
    with torch.no_grad():
        if cfg.features == "waveform":
            if not cfg.normalize:
                return wave.clone()
            real = wave[start:stop]
            out = torch.zeros_like(wave)
            out[start:stop] = (real - real.mean()) / (real.std(unbiased=False) + 1e-5)
            return out
        if cfg.features == "logmel":
            spec = _mel(cfg.sample_rate, cfg.win_length, cfg.hop_length, cfg.n_mels)(wave)
            spec = 10.0 * torch.log10(spec.clamp_min(_EPS))  # [n_mels, frames]
            first_center = 0.0  # centred frames
        else:
            spec = torchaudio.compliance.kaldi.fbank(
                wave.unsqueeze(0) * 32768.0,  # Kaldi's scale: 16-bit integers
                num_mel_bins=cfg.n_mels,
                sample_frequency=cfg.sample_rate,
                frame_length=cfg.window_ms,
                frame_shift=cfg.hop_ms,
                dither=0.0,
                window_type="hanning",
                energy_floor=0.0,
            ).T  # [n_mels, frames], natural log
            spec = spec * (10.0 / math.log(10.0))  # -> dB
            first_center = cfg.win_length / 2
        spec = torch.maximum(spec, spec.max() - TOP_DB)
        if cfg.normalize:
            spec = _normalize(spec, _valid_frames(start, stop, wave.shape[-1], spec.shape[-1], cfg.hop_length, first_center))
        return spec.unsqueeze(0).float().contiguous()
