"""Audio encoders: a 2-D CNN over spectrograms, or a local transformers model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from gramx_audio.config import AudioConfig

__all__ = ["AudioCNN", "HFAudioEncoder", "build_encoder"]


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AudioCNN(nn.Module):
    """2-D CNN over a spectrogram: ``[B, 1, n_mels, frames]`` -> ``[B, feature_dim]``.

    A stride-2 3x3 conv stem (``channels[0]``), then one block per further entry of
    ``channels``: 3x3 conv + BatchNorm + ReLU + 2x2 max-pool; the last maps are averaged
    over frequency and time, so any clip length works. The stem halves the resolution
    before the first wide layer, which keeps it cheap enough to train on a CPU (about
    31 M multiply-adds per 1 s clip at the defaults). In training mode SpecAugment masks
    one frequency band and one time span per clip (masked values become 0, the clip mean
    of normalised features).
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: float = 0.1,
        freq_mask: int = 8,
        time_mask: int = 10,
        spec_augment: bool = True,
    ):
        super().__init__()
        layers = _conv(1, channels[0], stride=2)
        for cin, cout in zip(channels, channels[1:]):
            layers += [*_conv(cin, cout), nn.MaxPool2d(2, ceil_mode=True)]
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.freq_mask, self.time_mask = freq_mask, time_mask
        self.spec_augment = spec_augment
        self.feature_dim = int(channels[-1])

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment: zero one random band of <= freq_mask bins and <= time_mask frames per clip."""
        b, _, freqs, frames = x.shape
        keep = torch.ones_like(x, dtype=torch.bool)
        for size, extent, shape in ((self.freq_mask, freqs, (1, 1, -1, 1)), (self.time_mask, frames, (1, 1, 1, -1))):
            if size <= 0:
                continue
            width = torch.randint(0, min(size, extent) + 1, (b, 1, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, 1, device=x.device) * (extent - width + 1)).long()
            pos = torch.arange(extent, device=x.device).view(shape)
            keep &= (pos < start) | (pos >= start + width)
        return x * keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # [B, n_mels, frames]
            x = x.unsqueeze(1)
        if self.training and self.spec_augment:
            x = self._augment(x)
        return self.dropout(self.layers(x).mean(dim=(2, 3)))


class HFAudioEncoder(nn.Module):
    """A transformers audio model loaded from a local directory, mean-pooled over time.

    Waveform models (wav2vec2, HuBERT, WavLM, ...) take ``[B, samples]``; spectrogram models
    (AST) take ``[B, frames, n_mels]``, so ``[B, 1, n_mels, frames]`` batches are transposed.
    ``pretrained_weights`` names the folder, so gramx stores frozen weights by reference and
    can add LoRA adapters.
    """

    def __init__(self, model_path: str, freeze: bool = False):
        super().__init__()
        from gramx_hf.towers import load_pretrained  # optional dependency: only for encoder='hf'

        self.model = load_pretrained(model_path)
        self.pretrained_weights = {"model.": str(Path(model_path).resolve())}
        if freeze:
            self.model.requires_grad_(False)
        config = self.model.config
        self.feature_dim = int(getattr(config, "output_hidden_size", None) or config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # [B, 1, n_mels, frames] -> [B, frames, n_mels]
            x = x.squeeze(1).transpose(1, 2)
        out = self.model(input_values=x)
        hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out[0]
        return hidden.mean(dim=1)


def build_encoder(cfg: AudioConfig) -> nn.Module:
    """The encoder ``cfg`` asks for; exposes ``feature_dim``."""
    if cfg.encoder == "hf" and cfg.output == "projected":
        from gramx_hf.towers import TowerEncoder

        return TowerEncoder(cfg.model_path, "audio", freeze=cfg.freeze)
    if cfg.encoder == "hf":
        return HFAudioEncoder(cfg.model_path, freeze=cfg.freeze)
    return AudioCNN(cfg.channels, cfg.dropout, cfg.freq_mask, cfg.time_mask, cfg.spec_augment)
