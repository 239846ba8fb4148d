"""The :class:`Modality` spec: everything the core needs to know about one modality."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import torch
from torch.utils.data import default_collate

from gramx.errors import PluginError

__all__ = ["Modality", "default_collate_samples", "resolve_path"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def default_collate_samples(samples: list[Any], cfg: pydantic.BaseModel) -> Any:
    """Stack a list of tensors (or dicts of tensors) into a batch."""
    return default_collate(samples)


def _shape(sample: Any) -> str:
    if isinstance(sample, torch.Tensor):
        return str(tuple(sample.shape))
    if isinstance(sample, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in sample.items()) + "}"
    return type(sample).__name__


def resolve_path(value: Any, root: str | Path) -> Any:
    """The default rule for path values: a relative path (a string) is joined to ``root``.

    Anything that is not a string or path is returned unchanged; ``~`` is expanded.
    """
    if not isinstance(value, str | os.PathLike):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else Path(root) / path)


@dataclass(frozen=True)
class Modality:
    """One modality, as a plugin registers it.

    - ``name``: unique key used in configs and manifests (lowercase, ``[a-z][a-z0-9_]*``).
    - ``load(value, cfg)``: one manifest value (usually a path) -> one sample (a tensor or a
      dict of tensors); raises :class:`gramx.LoadError` naming the input on bad data.
    - ``build_encoder(cfg)``: -> ``nn.Module`` mapping a batch to ``[B, feature_dim]``.
      Encoders should expose an int attribute ``feature_dim``. One whose weights come from a
      pretrained folder may say so with ``pretrained_weights = {state-dict prefix: folder}``:
      gramx then stores them by reference while frozen, and LoRA can adapt them
      (:mod:`gramx.model.pretrained`).
    - ``config``: a pydantic model class with the modality's options; its defaults must validate.
      Options typed ``pathlib.Path`` or :data:`gramx.files.config_files.NameOrPath` resolve against
      the run file's folder (``--set``: the working folder).
    - ``collate(samples, cfg)``: list of samples -> batch; by default tensors are stacked.
    - ``description``: one line for ``gramx plugins list``.
    - ``value_is_path``: manifest values are file paths (resolved against the manifest's
      folder); ``False`` for modalities whose values are the data itself, such as text.
    - ``samples``: example inputs (e.g. paths of shipped files) for ``gramx plugins check``.
    - ``resolve(value, root)``: the value with its relative paths made absolute against
      ``root`` (the manifest's folder), for values that hold paths inside a structure, such
      as ``{"path": "a.srt", "start": 1}``; by default a string value is joined to ``root``
      (:func:`resolve_path`) when ``value_is_path`` is true.
    """

    name: str
    load: Callable[[Any, Any], Any]
    build_encoder: Callable[[Any], torch.nn.Module]
    config: type[pydantic.BaseModel]
    collate: Callable[[list[Any], Any], Any] | None = None
    description: str = ""
    value_is_path: bool = True
    samples: Sequence[Any] = field(default_factory=tuple)
    resolve: Callable[[Any, Path], Any] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PluginError(f"invalid modality name {self.name!r}: use lowercase letters, digits and '_'")
        for attr in ("load", "build_encoder"):
            if not callable(getattr(self, attr)):
                raise PluginError(f"modality {self.name!r}: {attr} must be callable")
        for attr in ("collate", "resolve"):
            if getattr(self, attr) is not None and not callable(getattr(self, attr)):
                raise PluginError(f"modality {self.name!r}: {attr} must be callable or None")
        if not (isinstance(self.config, type) and issubclass(self.config, pydantic.BaseModel)):
            raise PluginError(f"modality {self.name!r}: config must be a pydantic BaseModel subclass")

    def default_config(self) -> pydantic.BaseModel:
        """The modality's configuration with every option at its default."""
        return self.config()

    def make_batch(self, samples: list[Any], cfg: pydantic.BaseModel) -> Any:
        """Collate loaded samples with the modality's collate (or the default, which stacks them).

        Samples of different shapes cannot be stacked: without a ``collate`` of its own, the
        modality's error then names the shapes and the fix.
        """
        if self.collate is not None:
            return self.collate(samples, cfg)
        try:
            return default_collate_samples(samples, cfg)
        except RuntimeError as exc:
            shapes = sorted({_shape(s) for s in samples})
            if len(shapes) < 2:
                raise
            raise PluginError(
                f"modality {self.name!r}: samples of different shapes cannot be stacked into a batch "
                f"({', '.join(shapes[:4])})",
                hint="give the Modality a collate(samples, cfg) that pads or crops them, or make load() return "
                "one fixed shape (see 'Writing a plugin' in gramx's README)",
            ) from exc

    def resolve_value(self, value: Any, root: str | Path) -> Any:
        """A manifest value with its relative paths resolved against ``root`` (see ``resolve``)."""
        if self.resolve is not None:
            return self.resolve(value, Path(root))
        return resolve_path(value, root) if self.value_is_path else value
