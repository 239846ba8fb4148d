"""Reading configuration files: YAML, ``--set a.b=c`` overrides, and the one rule for relative paths.

A path written in a file (a run file's manifests and output folder, a bridge file's models
and pools) resolves against that file's folder; a path typed on the command line (``--set
data.val=x.jsonl``, arguments) against the working folder. :func:`apply_overrides` makes
the command line's paths absolute as it applies them, :func:`resolve_paths` the file's
after validation.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from gramx.errors import ConfigError

__all__ = ["read_yaml", "apply_overrides", "resolve_paths"]


def _absolute(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def resolve_paths(section: BaseModel, base: str | Path) -> None:
    """Make every relative path of a validated configuration absolute against ``base``, in place.

    Path fields of nested sections and dictionaries of paths (a bridge file's pools) count.
    """
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            resolve_paths(value, base)
        elif isinstance(value, Path):
            setattr(section, name, _absolute(value, Path(base)))
        elif isinstance(value, dict) and value and all(isinstance(v, Path) for v in value.values()):
            setattr(section, name, {k: _absolute(v, Path(base)) for k, v in value.items()})


def _is_path_key(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether the key ``a.b.c`` of ``model`` holds a path (or a mapping of paths)."""
    current: Any = model
    for part in parts:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return False
        arms = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) in (typing.Union, types.UnionType) and len(arms) == 1:
            current = arms[0]
    return current is Path or (typing.get_origin(current) is dict and typing.get_args(current)[1] is Path)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    key, _, raw = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc.problem})") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str], model: type[BaseModel] | None = None) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a nested mapping, in place.

    With ``model``, the values of its path keys are made absolute against the working
    folder: they were typed on the command line.
    """
    for item in overrides:
        parts, value = _parse_override(item)
        if model is not None and _is_path_key(model, parts):
            value = _cwd_paths(value)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _cwd_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _cwd_paths(v) for k, v in value.items()}
    return str(_absolute(Path(value), Path.cwd())) if isinstance(value, str) and value else value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML run file with ``yaml.safe_load``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return {} if data is None else data
