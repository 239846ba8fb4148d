"""Conformance kit and host runner for plugin authors.

Check a modality against the contract with one call::

    from gramx.testing import check_modality
    check_modality(my_modality, samples=["tests/data/a.csv", "tests/data/b.csv"])

or subclass :class:`ModalityConformance` in a test module to get one pytest test per check::

    class TestImu(ModalityConformance):
        modality = IMU
        samples = ["tests/data/a.csv", "tests/data/b.csv"]

Each check raises :class:`ConformanceError` with a message saying what is wrong.

:func:`run_in_host` runs an installed plugin through the real host, as users meet it:
discovered through its entry point, trained for two steps in a run next to a small
companion modality, saved, loaded and saved again, with identical embeddings each time::

    def test_my_plugin_in_the_host(tmp_path):
        run_in_host("imu", tmp_path, distribution="gramx-imu")
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import torch

from gramx.plugins import host as plugins
from gramx.train.config import parse_config
from gramx.embed.embedding import embed_manifest
from gramx.errors import LoadError, PluginError
from gramx.plugins.hookspecs import hookimpl
from gramx.plugins.modality import Modality
from gramx.model.model import load_model
from gramx.train.loop import train

__all__ = ["ConformanceError", "Conformance", "check_modality", "ModalityConformance", "CHECKS", "fresh_host",
           "HostRun", "run_in_host"]

MISSING_FILE = "this-file-does-not-exist.gramx"


class ConformanceError(AssertionError):
    """A modality does not meet the plugin contract."""


@dataclass
class Conformance:
    """A modality, its sample inputs and (optionally) inputs that must fail to load."""

    modality: Modality
    samples: Sequence[Any]
    bad_inputs: Sequence[Any] = ()
    cfg: Any = None

    def __post_init__(self):
        if not self.samples:
            raise ConformanceError(f"{self.modality.name}: give at least one sample input")
        self.cfg = self.cfg if self.cfg is not None else self.modality.default_config()

    def batch(self, size: int | None = None) -> Any:
        """``size`` samples (cycling through them) loaded and collated; all of them once by default."""
        values = list(self.samples) if size is None else [self.samples[i % len(self.samples)] for i in range(size)]
        try:
            return self.modality.make_batch([self.modality.load(v, self.cfg) for v in values], self.cfg)
        except PluginError as exc:
            raise ConformanceError(f"{exc} ({exc.hint})") from exc

    def encoder(self) -> torch.nn.Module:
        torch.manual_seed(0)
        encoder = self.modality.build_encoder(self.cfg)
        if not isinstance(encoder, torch.nn.Module):
            raise ConformanceError(f"{self.modality.name}: build_encoder returned {type(encoder).__name__}, not nn.Module")
        return encoder

    def check_config(self) -> None:
        """The config's defaults validate and survive a JSON round trip."""
        cfg = self.modality.default_config()
        again = self.modality.config.model_validate_json(cfg.model_dump_json())
        if again != cfg:
            raise ConformanceError(f"{self.modality.name}: config does not round-trip through JSON")

    def check_forward(self) -> None:
        """load -> collate -> encoder gives finite ``[B, feature_dim]`` floats for B = 1 and 3."""
        encoder = self.encoder().eval()
        for size in (1, 3):
            with torch.no_grad():
                out = encoder(self.batch(size))
            self._check_output(out, size, encoder)

    def _check_output(self, out: Any, size: int, encoder: torch.nn.Module) -> None:
        name = self.modality.name
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != size:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConformanceError(f"{name}: encoder must return [B={size}, feature_dim], got {shape}")
        if not out.is_floating_point() or not torch.isfinite(out).all():
            raise ConformanceError(f"{name}: encoder output must be finite floats")
        declared = getattr(encoder, "feature_dim", None)
        if declared is not None and out.shape[1] != declared:
            raise ConformanceError(f"{name}: encoder.feature_dim is {declared} but it returns {out.shape[1]} features")

    def check_mixed_batch(self) -> None:
        """Every sample, loaded and collated into one batch, gives one output row each.

        Inputs of varying size (give samples of different sizes) need a ``collate`` that
        pads or crops them.
        """
        encoder = self.encoder().eval()
        with torch.no_grad():
            self._check_output(encoder(self.batch()), len(self.samples), encoder)

    def check_deterministic(self) -> None:
        """The encoder gives the same output twice in eval mode."""
        encoder = self.encoder().eval()
        batch = self.batch(2)
        with torch.no_grad():
            first, second = encoder(batch), encoder(batch)
        if not torch.allclose(first, second, atol=1e-6):
            raise ConformanceError(f"{self.modality.name}: encoder is not deterministic in eval mode")

    def check_trainable(self) -> None:
        """Gradients reach the encoder's trainable parameters in train mode."""
        encoder = self.encoder().train()
        params = [p for p in encoder.parameters() if p.requires_grad]
        if not params:
            raise ConformanceError(f"{self.modality.name}: encoder has no trainable parameters")
        out = encoder(self.batch(3))
        (out * torch.randn_like(out)).sum().backward()
        grads = [p.grad for p in params if p.grad is not None]
        if not grads or not any(g.abs().sum() > 0 for g in grads):
            raise ConformanceError(f"{self.modality.name}: no gradient reaches the encoder's parameters")
        if not all(torch.isfinite(g).all() for g in grads):
            raise ConformanceError(f"{self.modality.name}: encoder gradients are not finite")

    def check_bad_input(self) -> None:
        """Bad inputs (and a missing file, for path modalities) raise ``gramx.LoadError`` naming them."""
        bad = list(self.bad_inputs) + ([MISSING_FILE] if self.modality.value_is_path else [])
        for value in bad:
            try:
                self.modality.load(value, self.cfg)
            except LoadError as exc:
                names = {str(value), getattr(value, "name", None)} - {None}
                if not any(name in str(exc) and name in exc.source for name in names):
                    raise ConformanceError(f"{self.modality.name}: LoadError for {value!r} does not name it (message "
                                           f"and source): {exc}")
            except Exception as exc:
                raise ConformanceError(
                    f"{self.modality.name}: bad input {value!r} raised {type(exc).__name__}, not gramx.LoadError: {exc}"
                ) from exc
            else:
                raise ConformanceError(f"{self.modality.name}: bad input {value!r} loaded without error")


CHECKS = ("check_config", "check_forward", "check_mixed_batch", "check_deterministic", "check_trainable",
          "check_bad_input")


def check_modality(modality: Modality, samples: Sequence[Any], bad_inputs: Sequence[Any] = (), cfg: Any = None) -> list[str]:
    """Run every conformance check; return their names or raise :class:`ConformanceError`."""
    kit = Conformance(modality, samples, bad_inputs, cfg)
    for check in CHECKS:
        getattr(kit, check)()
    return list(CHECKS)


class ModalityConformance:
    """Pytest base class: set ``modality``, ``samples`` (and ``bad_inputs``, ``cfg``) in a subclass."""

    modality: Modality
    samples: Sequence[Any] = ()
    bad_inputs: Sequence[Any] = ()
    cfg: Any = None

    def _kit(self) -> Conformance:
        return Conformance(self.modality, self.samples, self.bad_inputs, self.cfg)

    def test_config(self):
        self._kit().check_config()

    def test_forward(self):
        self._kit().check_forward()

    def test_mixed_batch(self):
        self._kit().check_mixed_batch()

    def test_deterministic(self):
        self._kit().check_deterministic()

    def test_trainable(self):
        self._kit().check_trainable()

    def test_bad_input(self):
        self._kit().check_bad_input()


# --------------------------------------------------------------------------- the host runner


@contextlib.contextmanager
def fresh_host() -> Iterator[plugins.PluginHost]:
    """The plugin host discovered anew from the installed entry points; forgotten again on exit."""
    plugins.reset()
    try:
        yield plugins.get_host()
    finally:
        plugins.reset()


class _CompanionConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    rows: int = 64


class _CompanionEncoder(torch.nn.Module):
    """One learned vector per manifest row: the partner the plugin's modality is aligned with."""

    def __init__(self, cfg: _CompanionConfig):
        super().__init__()
        self.rows = torch.nn.Embedding(cfg.rows, 8)
        self.feature_dim = 8

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.rows(batch)


def _load_row(value: Any, cfg: _CompanionConfig) -> torch.Tensor:
    return torch.tensor(int(value))


COMPANION = Modality(name="host_companion", load=_load_row, build_encoder=_CompanionEncoder,
                     config=_CompanionConfig, value_is_path=False, description="gramx.testing: row ids")


class _Companion:
    @hookimpl
    def gramx_register_modalities(self, register):
        register(COMPANION)


@dataclass
class HostRun:
    """What :func:`run_in_host` saw: the plugin's status, the trained model directory, its embeddings."""

    status: plugins.PluginStatus
    model_dir: Path
    embeddings: torch.Tensor


def run_in_host(name: str, folder: str | Path, samples: Sequence[Any] | None = None,
                options: Mapping[str, Any] | None = None, distribution: str | None = None,
                steps: int = 2) -> HostRun:
    """Run the installed modality ``name`` through the real host, as a user would; raise on any problem.

    The plugin is discovered through its entry point (and must come from ``distribution``
    when given); a run aligns it with a companion modality for ``steps`` optimizer steps on
    four rows of ``samples`` (default: the modality's own) with ``options``; the model is
    saved, loaded and saved again, and each copy must embed the rows identically. Files go
    to ``folder``.
    """
    folder = Path(folder)
    with fresh_host() as host:
        modality = host.get_modality(name)
        status = host.provider(name)
        if distribution is not None and status.distribution != distribution:
            raise ConformanceError(f"{name}: provided by {status.distribution!r}, not {distribution!r}")
        host.register_plugin(_Companion(), name="gramx-testing-companion")
        samples = list(samples or modality.samples)
        if not samples:
            raise ConformanceError(f"{name}: give samples (the modality ships none)")
        manifest = folder / "host-run.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        manifest.write_text("".join(json.dumps({name: str(samples[i % len(samples)]) if modality.value_is_path
                                                else samples[i % len(samples)], COMPANION.name: i}) + "\n"
                                    for i in range(4)))
        config = parse_config({
            "modalities": {name: {"options": dict(options or {})}, COMPANION.name: {}},
            "dim": 8, "loss": {"type": "gram", "anchor": COMPANION.name},
            "data": {"train": str(manifest), "batch_size": 2, "shuffle": False},
            "optim": {"max_steps": steps, "lr": 1e-3, "warmup_steps": 0},
            "output": {"dir": str(folder / "host-run")}, "device": "cpu",
            "logging": {"progress": False, "tensorboard": False},
        }, base=folder)
        model_dir = train(config)
        model = load_model(model_dir)
        first = embed_manifest(model, manifest).feats[name]
        again = embed_manifest(load_model(model.save_pretrained(folder / "host-run-copy")), manifest).feats[name]
        if not torch.equal(first, again):
            raise ConformanceError(f"{name}: a saved and loaded model embeds differently")
        if not torch.allclose(first.norm(dim=1), torch.ones(len(first)), atol=1e-4):
            raise ConformanceError(f"{name}: embeddings are not unit vectors")
        return HostRun(status=status, model_dir=model_dir, embeddings=first)
