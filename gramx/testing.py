"""Conformance kit for plugin authors.

Check a modality against the contract with one call::

    from gramx.testing import check_modality
    check_modality(my_modality, samples=["tests/data/a.csv", "tests/data/b.csv"])

or subclass :class:`ModalityConformance` in a test module to get one pytest test per check::

    class TestImu(ModalityConformance):
        modality = IMU
        samples = ["tests/data/a.csv", "tests/data/b.csv"]

Each check raises :class:`ConformanceError` with a message saying what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gramx.errors import LoadError
from gramx.modality import Modality

__all__ = ["ConformanceError", "Conformance", "check_modality", "ModalityConformance", "CHECKS"]

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

    def batch(self, size: int) -> Any:
        values = [self.samples[i % len(self.samples)] for i in range(size)]
        return self.modality.make_batch([self.modality.load(v, self.cfg) for v in values], self.cfg)

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
        """Bad inputs (and a missing file, for path modalities) raise ``gramx.LoadError``."""
        bad = list(self.bad_inputs) + ([MISSING_FILE] if self.modality.value_is_path else [])
        for value in bad:
            try:
                self.modality.load(value, self.cfg)
            except LoadError as exc:
                names = {str(value), getattr(value, "name", None)} - {None}
                if not any(name in str(exc) for name in names):
                    raise ConformanceError(f"{self.modality.name}: LoadError for {value!r} does not name it: {exc}")
            except Exception as exc:
                raise ConformanceError(
                    f"{self.modality.name}: bad input {value!r} raised {type(exc).__name__}, not gramx.LoadError: {exc}"
                ) from exc
            else:
                raise ConformanceError(f"{self.modality.name}: bad input {value!r} loaded without error")


CHECKS = ("check_config", "check_forward", "check_deterministic", "check_trainable", "check_bad_input")


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

    def test_deterministic(self):
        self._kit().check_deterministic()

    def test_trainable(self):
        self._kit().check_trainable()

    def test_bad_input(self):
        self._kit().check_bad_input()
