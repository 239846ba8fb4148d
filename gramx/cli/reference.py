"""The configuration reference in Markdown, generated from the pydantic models (``gramx config reference``).

It lists every key of a run file, of each installed modality's options and of a bridge
file, with type, default and description, so the documentation cannot drift from the code.
``docs/config-reference.md`` is this text for the built-in plugins.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping

import pydantic
from pydantic_core import PydanticUndefined

from gramx.train.config import RunConfig, RunModality
from gramx.extend.grow import BridgeConfig
from gramx.plugins.modality import Modality

__all__ = ["render"]


def _type(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    if isinstance(annotation, type):
        text = annotation.__name__
    text = text.replace("<class '", "").replace("'>", "")
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, pydantic.BaseModel):
        return "(section)"
    return f"`{value!r}`" if value not in ({}, []) else f"`{value}`"


def _section(model: type[pydantic.BaseModel], title: str) -> list[str]:
    doc = (model.__doc__ or "").strip()
    lines = [f"### {title}", "", doc.splitlines()[0] if doc else f"(`{model.__name__}` has no docstring)", "",
             "| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        sections = [a for a in (annotation, *(typing.get_args(annotation) if optional else ()))
                    if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]  # a section, or an optional one
        nested += [(name, section) for section in sections[:1]]
        cells = [f"`{name}`", _type(annotation), _default(field), field.description or ""]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    for name, sub in nested:
        lines += _section(sub, f"{title}.{name}" if not title.endswith(" file") else name)
    return lines


def render(modalities: Mapping[str, Modality]) -> str:
    """The reference for a run file with these ``modalities`` (name -> registered modality)."""
    lines = ["# Configuration reference", "",
             "Generated from the pydantic models (`gramx config reference`); do not edit.",
             "Unknown keys are errors that name the key path and the allowed keys. Relative paths in a",
             "file resolve against that file's folder; paths given on the command line (`--set",
             "a.b=value`, whose value is parsed as YAML) against the working folder.", "",
             "## Run file (`gramx train RUN.yaml`, `gramx extend add MODEL RUN.yaml`)", ""]
    lines += _section(RunConfig, "run file")
    lines += _section(RunModality, "modalities.NAME")
    lines += ["## Modality options (`modalities.NAME.options`)", "",
              "Each modality's options are defined by the plugin that provides it.", ""]
    for name, modality in sorted(modalities.items()):
        lines += _section(modality.config, f"{name}: {modality.description}" if modality.description else name)
    lines += ["## Bridge file (`gramx extend bridge BRIDGE.yaml`)", ""]
    lines += _section(BridgeConfig, "bridge file")
    return "\n".join(lines).rstrip() + "\n"
