"""Options of the ``audio`` modality."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AudioConfig"]


class AudioConfig(BaseModel):
    """How audio files are read, turned into features and encoded.

    Loading: any file libsndfile reads (WAV, FLAC, OGG/Vorbis, ...) is mixed to mono,
    resampled to ``sample_rate`` and cropped or zero-padded to ``duration`` seconds.
    """

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(16000, gt=0, description="resample every file to this rate (Hz)")
    duration: float = Field(1.0, gt=0, description="seconds per clip: longer files are cropped, shorter padded")
    crop: Literal["center", "start", "random"] = Field(
        "center",
        description="where the clip sits in the window: 'center' and 'start' are deterministic; "
        "'random' draws a new offset on every load (training augmentation only)",
    )
    features: Literal["logmel", "fbank", "waveform", "processor"] = Field(
        "logmel",
        description="'logmel' (torchaudio MelSpectrogram, log), 'fbank' (Kaldi-compatible log "
        "filterbanks), 'waveform' (raw samples, for encoder='hf' waveform models) or 'processor' (the "
        "feature extractor saved with the hf model in model_path, e.g. CLAP's, at its own sampling rate: it "
        "crops and pads the recording itself, so sample_rate, duration and crop are unused)",
    )
    n_mels: int = Field(64, gt=0, description="mel bands for 'logmel' and 'fbank'")
    window_ms: float = Field(25.0, gt=0, description="analysis window length in milliseconds")
    hop_ms: float = Field(10.0, gt=0, description="hop between frames in milliseconds")
    normalize: bool = Field(
        True, description="per-clip normalisation to zero mean, unit variance (over the real, unpadded part)"
    )
    encoder: Literal["cnn", "hf"] = Field(
        "cnn", description="'cnn': 2-D CNN over the spectrogram; 'hf': a local transformers audio model"
    )
    channels: list[int] = Field(
        [16, 32, 64, 128, 256],
        min_length=1,
        description="cnn: width of the stride-2 stem, then of each conv block; the last is feature_dim",
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="cnn: dropout on the pooled features in training")
    spec_augment: bool = Field(True, description="cnn: SpecAugment time/frequency masks in training mode")
    freq_mask: int = Field(8, ge=0, description="cnn: widest frequency mask (mel bands)")
    time_mask: int = Field(10, ge=0, description="cnn: widest time mask (frames)")
    model_path: Path | None = Field(
        None, description="hf: local directory of a transformers audio model (wav2vec2, HuBERT, AST, ...); relative: to the run file's folder"
    )
    freeze: bool = Field(False, description="hf: keep the pretrained weights fixed")
    output: Literal["pooled", "projected"] = Field(
        "pooled", description="hf: 'pooled': the model's hidden states averaged over time; 'projected': the audio "
        "embedding of a two-tower model (CLAP), exactly what its get_audio_features gives (gramx-hf)"
    )

    @model_validator(mode="after")
    def _check(self) -> AudioConfig:
        if self.encoder != "hf" and (self.output == "projected" or self.features == "processor"):
            raise ValueError("output='projected' and features='processor' need encoder='hf' and its model_path")
        if self.encoder == "cnn" and self.features == "waveform":
            raise ValueError(
                "encoder='cnn' reads a spectrogram: use features='logmel' or 'fbank' "
                "(features='waveform' is for encoder='hf' models such as wav2vec2)"
            )
        if self.encoder == "hf" and not self.model_path:
            raise ValueError("encoder='hf' needs model_path: a local directory with a transformers audio model")
        if self.features in ("logmel", "fbank") and self.window_ms / 1000 > self.duration:
            raise ValueError(f"window_ms={self.window_ms} is longer than duration={self.duration} s")
        if self.hop_ms > self.window_ms:
            raise ValueError(f"hop_ms={self.hop_ms} is larger than window_ms={self.window_ms}")
        return self

    @property
    def num_samples(self) -> int:
        """Samples per clip after resampling, cropping and padding."""
        return max(1, round(self.duration * self.sample_rate))

    @property
    def win_length(self) -> int:
        return max(1, round(self.window_ms * self.sample_rate / 1000))

    @property
    def hop_length(self) -> int:
        return max(1, round(self.hop_ms * self.sample_rate / 1000))
