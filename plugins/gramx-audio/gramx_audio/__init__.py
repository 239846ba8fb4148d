"""gramx plugin: the ``audio`` modality (soundfile decoding, torchaudio features, CNN or transformers encoder).

Installed, it registers through the ``gramx`` entry point ``audio = "gramx_audio"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import gramx
from gramx_audio.config import AudioConfig
from gramx_audio.encoders import AudioCNN, HFAudioEncoder, build_encoder
from gramx_audio.features import compute_features
from gramx_audio.io import fit_length, read_audio, resample

__all__ = ["AudioConfig", "AudioCNN", "HFAudioEncoder", "AUDIO", "load_audio", "build_encoder", "SAMPLES"]

SAMPLES = tuple(str(p) for p in sorted((Path(__file__).parent / "samples").glob("*.flac")))


def load_audio(value: str | os.PathLike, cfg: AudioConfig) -> torch.Tensor:
    """One audio file -> features: ``[1, n_mels, frames]`` (logmel, fbank) or ``[samples]`` (waveform)."""
    samples, rate = read_audio(value)
    wave = resample(torch.from_numpy(samples), rate, cfg.sample_rate)
    wave, start, stop = fit_length(wave, cfg.num_samples, cfg.crop)
    return compute_features(wave, start, stop, cfg)


AUDIO = gramx.Modality(
    name="audio",
    load=load_audio,
    build_encoder=build_encoder,
    config=AudioConfig,
    description="audio files (WAV/FLAC/OGG) -> log-mel / fbank / waveform; CNN or transformers encoder",
    samples=SAMPLES,
)


@gramx.hookimpl
def gramx_register_modalities(register):
    register(AUDIO)
