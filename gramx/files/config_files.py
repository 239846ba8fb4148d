"""Reading configuration files: YAML, ``--set a.b=c`` overrides, and the one rule for relative paths.

A path written in a file (a run file's manifests and output folder, a bridge file's models
and pools, a plugin's path options) resolves against that file's folder; a path typed on
the command line (``--set data.val=x.jsonl``, arguments) against the working folder.
:func:`apply_overrides` makes the command line's paths absolute as it applies them,
:func:`resolve_paths` the file's after validation.

A path is a field typed ``pathlib.Path`` (or a mapping of them). A field typed
:data:`NameOrPath` holds a name or a path (a Hugging Face model id or a local folder): it
is resolved when it is written as a path (``./x``, ``../x``, ``/x``, ``~/x``, ``a/b/c``) or
names something that exists under the base folder, and left as it is otherwise.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel

from gramx.errors import ConfigError

__all__ = ["read_yaml", "read_json", "apply_overrides", "resolve_paths", "path_kind", "NameOrPath"]


class _NameOrPathMarker:
    """Marks a ``str`` field as "a name or a path" (see the module docstring)."""


_NAME_OR_PATH = _NameOrPathMarker()
#: A string option holding a name (e.g. a model id) or a path; paths follow the path rule.
NameOrPath = Annotated[str, _NAME_OR_PATH]
#: What a configuration key holds: ``"path"`` (one or a mapping of them), ``"name_or_path"`` or None.
PathKind = str | None


def _absolute(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _name_or_path(value: str, base: Path) -> str:
    """``value`` made absolute against ``base`` when it is written as a path or exists there."""
    written_as_path = value.startswith(("/", ".", "~")) or value.count("/") > 1
    if value and (written_as_path or (base / value).exists()):
        return str(_absolute(Path(value), base))
    return value


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None``; any other annotation as it is."""
    arms = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return arms[0] if is_union and len(arms) == 1 else annotation


def _kind(annotation: Any, metadata: list) -> PathKind:
    """The path kind of a field from its annotation and metadata (optional fields count)."""
    if any(m is _NAME_OR_PATH for m in metadata):
        return "name_or_path"
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _kind(typing.get_args(annotation)[0], list(annotation.__metadata__))
    if annotation is Path or (typing.get_origin(annotation) is dict and typing.get_args(annotation)[1] is Path):
        return "path"
    return None


def resolve_paths(section: BaseModel, base: str | Path) -> None:
    """Make every relative path of a validated configuration absolute against ``base``, in place.

    Path fields of nested sections, dictionaries of paths (a bridge file's pools) and
    :data:`NameOrPath` fields count.
    """
    base = Path(base)
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            resolve_paths(value, base)
        elif isinstance(value, Path):
            setattr(section, name, _absolute(value, base))
        elif isinstance(value, dict) and value and all(isinstance(v, Path) for v in value.values()):
            setattr(section, name, {k: _absolute(v, base) for k, v in value.items()})
        elif isinstance(value, str) and _kind(info.annotation, info.metadata) == "name_or_path":
            setattr(section, name, _name_or_path(value, base))


def path_kind(model: type[BaseModel], parts: list[str]) -> PathKind:
    """What the key ``a.b.c`` of ``model`` holds: ``"path"``, ``"name_or_path"`` or None."""
    current: Any = model
    kind: PathKind = None
    for part in parts:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            info = current.model_fields[part]
            current, kind = info.annotation, _kind(info.annotation, info.metadata)
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
            kind = "path" if current is Path else None
        else:
            return None
        current = _without_none(current)
    return kind


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


def apply_overrides(data: dict, overrides: list[str], kind_of: Callable[[list[str]], PathKind] | None = None) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a nested mapping, in place.

    With ``kind_of`` (``parts -> path kind``, e.g. :func:`path_kind` of the file's model),
    the values of path keys are made absolute against the working folder: they were typed
    on the command line.
    """
    for item in overrides:
        parts, value = _parse_override(item)
        kind = kind_of(parts) if kind_of is not None else None
        if kind is not None:
            value = _cwd_paths(value, kind)
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


def _cwd_paths(value: Any, kind: str) -> Any:
    if isinstance(value, dict):
        return {k: _cwd_paths(v, kind) for k, v in value.items()}
    if not (isinstance(value, str) and value):
        return value
    return _name_or_path(value, Path.cwd()) if kind == "name_or_path" else str(_absolute(Path(value), Path.cwd()))


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


def read_json(path: str | Path, hint: str | None = None) -> Any:
    """The JSON value of a file gramx wrote (or someone forged): a :class:`ConfigError` naming it otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problem = f"cannot read it ({exc.strerror})"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON ({exc.msg}, line {exc.lineno})"
    except RecursionError:
        problem = "invalid JSON (nested too deeply)"
    raise ConfigError(f"{path}: {problem}", hint)
