"""Tests of the gramx-audio plugin: conformance on real files, signal processing, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import gramx
from gramx.cli.app import main as gramx_main
from gramx.testing import ModalityConformance, check_modality, fresh_host, run_in_host
from gramx_audio import AUDIO, SAMPLES, AudioCNN, AudioConfig, load_audio
from gramx_audio.features import _valid_frames
from gramx_audio.io import fit_length, read_audio, resample

DATA = Path(__file__).parent / "data"
FLACS = sorted(str(p) for p in DATA.glob("*.flac"))  # spoken digits, mono 8 kHz (see data/ATTRIBUTION.md)
LONG = str(DATA / "9_theo_16.flac")  # 2.28 s
SHORT = str(DATA / "6_nicolas_7.flac")  # 0.14 s


def sine(freq: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A valid stereo 44.1 kHz WAV plus every kind of broken audio file."""
    d = tmp_path_factory.mktemp("audio")
    wav = d / "tone.wav"
    sf.write(wav, sine(440, 44100, 0.8, channels=2), 44100)
    ogg = d / "tone.ogg"
    sf.write(ogg, sine(330, 22050, 0.5), 22050)
    good = wav.read_bytes()
    out = {"wav": str(wav), "ogg": str(ogg)}
    for name, data in {
        "truncated.wav": good[: len(good) // 2],
        "header_only.wav": good[:44],
        "cut_header.wav": good[:20],
        "garbage.wav": np.random.default_rng(0).bytes(4000),
        "text.flac": b"this is not audio\n" * 50,
        "empty_bytes.wav": b"",
        "truncated.flac": Path(LONG).read_bytes()[:6000],
    }.items():
        (d / name).write_bytes(data)
        out[name] = str(d / name)
    sf.write(d / "no_samples.wav", np.zeros(0, np.float32), 16000)
    out["no_samples.wav"] = str(d / "no_samples.wav")
    return out


BAD = ["truncated.wav", "header_only.wav", "cut_header.wav", "garbage.wav", "text.flac",
       "empty_bytes.wav", "truncated.flac", "no_samples.wav"]  # fmt: skip


class TestAudioConformance(ModalityConformance):
    """The conformance kit on the demo FLACs and a stereo 44.1 kHz WAV written by the test."""

    modality = AUDIO

    @pytest.fixture(autouse=True)
    def _inputs(self, files):
        self.samples = [*FLACS, files["wav"], files["ogg"]]
        self.bad_inputs = [files[name] for name in BAD]


def test_shipped_samples():
    assert len(SAMPLES) == 2 and all(Path(s).is_file() for s in SAMPLES)
    assert AUDIO.samples == SAMPLES


def test_bad_input_messages(files, tmp_path):
    cfg = AudioConfig()
    with pytest.raises(gramx.LoadError, match="file not found"):
        load_audio(tmp_path / "missing.wav", cfg)
    with pytest.raises(gramx.LoadError, match="not a file"):
        load_audio(tmp_path, cfg)
    with pytest.raises(gramx.LoadError, match="truncated"):
        load_audio(files["truncated.wav"], cfg)
    with pytest.raises(gramx.LoadError, match="no audio samples"):
        load_audio(files["no_samples.wav"], cfg)
    with pytest.raises(gramx.LoadError, match="cannot decode"):
        load_audio(files["garbage.wav"], cfg)
    with pytest.raises(gramx.LoadError, match="expected an audio file path, got int"):
        load_audio(42, cfg)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = sine(300, 8000, 0.5), sine(500, 8000, 0.5)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    mono, rate = read_audio(tmp_path / "st.wav")
    assert rate == 8000 and mono.ndim == 1
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def test_resampling_keeps_frequency(tmp_path):
    sf.write(tmp_path / "a440.wav", sine(440, 8000, 1.0), 8000)
    cfg = AudioConfig(features="waveform", normalize=False, encoder="hf", model_path="unused")
    wave = load_audio(tmp_path / "a440.wav", cfg).numpy()
    assert wave.shape == (16000,)  # 1 s at 16 kHz
    assert abs(_peak_hz(wave, 16000) - 440) <= 1.0
    assert 0.45 < np.abs(wave[1000:-1000]).max() < 0.55  # amplitude survives
    down = resample(torch.from_numpy(sine(440, 16000, 1.0)), 16000, 11025).numpy()
    assert len(down) == 11025 and abs(_peak_hz(down, 11025) - 440) <= 1.0


def test_fit_length_crop_and_pad():
    wave = torch.arange(1, 11, dtype=torch.float32)
    out, start, stop = fit_length(wave, 4, "center")
    assert out.tolist() == [4, 5, 6, 7] and (start, stop) == (0, 4)
    out, _, _ = fit_length(wave, 4, "start")
    assert out.tolist() == [1, 2, 3, 4]
    out, start, stop = fit_length(wave, 14, "center")
    assert out.tolist() == [0, 0, *range(1, 11), 0, 0] and (start, stop) == (2, 12)
    out, start, stop = fit_length(wave, 14, "start")
    assert (start, stop) == (0, 10) and out[10:].abs().sum() == 0
    for _ in range(20):
        out, start, stop = fit_length(wave, 14, "random")
        assert 0 <= start <= 4 and stop == start + 10 and torch.equal(out[start:stop], wave)
        out, _, _ = fit_length(wave, 3, "random")
        assert len(out) == 3 and out[1] - out[0] == 1


@pytest.mark.parametrize("features", ["logmel", "fbank"])
def test_features_have_fixed_shape_and_are_normalised(features):
    cfg = AudioConfig(features=features, duration=1.0, n_mels=40)
    frames = 101 if features == "logmel" else 98  # centred frames vs Kaldi's snip_edges
    shapes = {tuple(load_audio(path, cfg).shape) for path in (LONG, SHORT, *FLACS)}
    assert shapes == {(1, 40, frames)}
    x = load_audio(LONG, cfg)  # cropped: every frame is real audio
    assert abs(x.mean()) < 1e-4 and abs(x.std(unbiased=False) - 1) < 1e-3
    short = load_audio(SHORT, cfg)[0]  # 0.14 s padded to 1 s, centred
    lo, hi = 43, 58  # frames whose centres are real audio (samples 6852..9148 at 16 kHz)
    real = short[:, lo + 2 : hi - 2]
    assert abs(real.mean()) < 0.3 and short[:, :20].std() < 1e-5  # padding is a constant floor
    assert short[:, :20].max() < real.mean()


def test_valid_frames():
    assert _valid_frames(0, 16000, 16000, 101, 160, 0.0) == slice(0, 101)  # no padding: all frames
    assert _valid_frames(6852, 9148, 16000, 101, 160, 0.0) == slice(43, 58)
    assert _valid_frames(0, 9148, 16000, 101, 160, 0.0) == slice(0, 58)
    assert _valid_frames(200, 16000, 16000, 98, 160, 200.0) == slice(0, 98)
    assert _valid_frames(1000, 1001, 16000, 101, 160, 0.0) == slice(7, 8)  # at least one frame


def test_cnn_handles_any_length_and_augments_only_in_training():
    enc = AudioCNN().eval()
    assert enc.feature_dim == 256
    for frames in (7, 101, 333):
        assert enc(torch.randn(2, 1, 64, frames)).shape == (2, 256)
    x = torch.randn(4, 1, 64, 101)
    masked = enc._augment(x)
    assert (masked == 0).any() and ((masked == x) | (masked == 0)).all()
    torch.manual_seed(0)
    enc.train()
    a = enc(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, enc(x))


def test_config_is_strict():
    with pytest.raises(ValueError, match="extra"):
        AudioConfig(smaple_rate=8000)
    with pytest.raises(ValueError, match="waveform"):
        AudioConfig(features="waveform")  # the cnn reads spectrograms
    with pytest.raises(ValueError, match="model_path"):
        AudioConfig(encoder="hf")
    assert AudioConfig.model_validate({"sample_rate": 8000, "crop": "random"}).num_samples == 8000


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory) -> str:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(config).save_pretrained(path)
    return str(path)


def test_hf_waveform_encoder(tiny_wav2vec2):
    cfg = AudioConfig(encoder="hf", features="waveform", model_path=tiny_wav2vec2, duration=0.5)
    assert check_modality(AUDIO, FLACS[:2], cfg=cfg)
    enc = AUDIO.build_encoder(cfg)
    assert enc.feature_dim == 32


def test_hf_spectrogram_encoder(tmp_path):
    from transformers import ASTConfig, ASTModel

    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       max_length=98, num_mel_bins=64)  # fmt: skip
    ASTModel(config).save_pretrained(tmp_path)
    cfg = AudioConfig(encoder="hf", features="fbank", model_path=str(tmp_path))
    assert check_modality(AUDIO, FLACS[:2], cfg=cfg)


def test_hf_frozen(tiny_wav2vec2):
    cfg = AudioConfig(encoder="hf", features="waveform", model_path=tiny_wav2vec2, freeze=True)
    assert not any(p.requires_grad for p in AUDIO.build_encoder(cfg).parameters())


def test_runs_through_the_host(tmp_path):
    """Discovered through its entry point, trained two steps, saved and loaded (gramx.testing.run_in_host)."""
    run = run_in_host("audio", tmp_path, distribution="gramx-audio")
    assert run.status.modalities == ["audio"] and run.embeddings.shape == (4, 8)


def test_cli_check(capsys):
    with fresh_host():
        assert gramx_main(["plugins", "check", "audio"]) == 0
        assert "audio: conforms" in capsys.readouterr().out
