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


def _processed(wave: torch.Tensor, rate: int, cfg: AudioConfig) -> dict[str, torch.Tensor]:
    from gramx_hf.towers import preprocessor

    extractor = preprocessor(cfg.model_path, "audio")
    wave = resample(wave, rate, extractor.sampling_rate)
    inputs = extractor(wave.numpy(), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    return {key: value[0] for key, value in inputs.items()}


def load_audio(value: str | os.PathLike, cfg: AudioConfig) -> torch.Tensor | dict[str, torch.Tensor]:
    """One audio file -> features: ``[1, n_mels, frames]`` (logmel, fbank), ``[samples]`` (waveform), or the
    feature extractor's tensors of one recording (processor: CLAP's ``input_features`` and ``is_longer``)."""
    samples, rate = read_audio(value)
    if cfg.features == "processor":
        return _processed(torch.from_numpy(samples), rate, cfg)
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
