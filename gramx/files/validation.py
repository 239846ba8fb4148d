"""Validation of pydantic models with readable errors: strict sections, one line per problem.

The run configuration, a model directory's ``config.json`` and the bridge file are all
validated here, so every problem reads the same way: the key path, what is wrong and, for
an unknown key, the keys allowed there with a did-you-mean.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from gramx.errors import ConfigError

__all__ = ["MAX_WIDTH", "MAX_DEPTH", "Section", "format_validation_error", "validate"]

#: The widest vector or layer a run file or a model's config.json may ask for (the space's
#: ``dim``, head widths, LoRA ranks): 65,536. A size read from a file never allocates more.
MAX_WIDTH = 1 << 16

#: The most residual blocks a bridge's projector may stack.
MAX_DEPTH = 64


Model = TypeVar("Model", bound=BaseModel)


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _unwrap(annotation: Any) -> Any:
    """The pydantic model or dict type inside Optional / Union annotations."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            inner = _unwrap(arm)
            if inner is not None:
                return inner
        return None
    if origin is dict:
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` (``None`` when it is not a model)."""
    current: Any = root
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = _unwrap(field.annotation)
        elif typing.get_origin(current) is dict:
            current = _unwrap(typing.get_args(current)[1])
        else:
            return None
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def format_validation_error(exc: pydantic.ValidationError, root: type[BaseModel], prefix: tuple = ()) -> str:
    """One readable phrase per problem, joined by ``; ``: the key path, what is wrong and the allowed keys."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, tuple(err["loc"][:-1]))
            allowed = sorted(parent.model_fields) if parent else []
            key = str(loc[-1])
            msg = f"unknown key {_path(loc)!r}; allowed keys: {', '.join(allowed)}"
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        elif err["type"] == "missing":
            msg = f"missing key {_path(loc)!r}"
        else:
            text = err["msg"].removeprefix("Value error, ")
            msg = f"{_path(loc)}: {text}" if loc else text
            if "input" in err and not isinstance(err["input"], dict | list) and err["type"] != "value_error":
                msg += f" (got {err['input']!r})"
        lines.append(msg)
    return "; ".join(lines)


def validate(model: type[Model], data: Any, what: str, prefix: tuple = (), hint: str | None = None) -> Model:
    """``model.model_validate(data)``, or a :class:`ConfigError` reading ``"{what}: {problems}"``.

    ``prefix`` is the key path of ``data`` inside a larger file, for the messages.
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{what}: {format_validation_error(exc, model, prefix)}", hint) from None
