"""Frozen pretrained weights stored by reference (a folder's path and content hash), not copied.

An encoder may say which of its weights it loaded from a pretrained folder, with an attribute

    encoder.pretrained_weights = {"backbone.": "/models/all-MiniLM-L6-v2"}   # state-dict prefix -> folder

(the transformers encoders of the built-in plugins do). Right after a model builds the
encoder (and adds LoRA adapters), :class:`PretrainedWeights` records a digest of every frozen
parameter under those prefixes. Saving (:func:`plan_save`) leaves out each one that is still
frozen and unchanged: the modality's entry in ``config.json`` records the folder instead
(:class:`WeightsRef`: the prefix, the folder's path and the SHA-256 of its files), and
``model.safetensors`` keeps the rest: LoRA adapters, heads, buffers, every trained weight.
Loading checks that the folder is there and unchanged (:func:`resolve_refs`), the plugin
rebuilds the encoder from it as it always does, and the rest comes from the weights file.

A self-contained directory (for sharing) copies each referenced folder into
``pretrained/NAME`` inside the model directory, refers to it by that relative path and
rewrites the strings of the modality's config that named the folder. A folder that no
config string names (a plugin's bundled default, chosen by name) is not copied: its weights
go into ``model.safetensors``.

A model directory may come from someone else, so its references are checked before use: a
relative one must stay inside the directory, and a folder is hashed only when it looks like
a model's (at most :data:`MAX_FOLDER_FILES` files and :data:`MAX_FOLDER_BYTES` bytes, every
entry readable); ``/usr`` is refused at once, not after minutes of hashing.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from gramx.errors import GramxError, PluginError
from gramx.files.validation import Section

__all__ = ["COPIES_DIR", "MAX_FOLDER_FILES", "MAX_FOLDER_BYTES", "WeightsRef", "PretrainedWeights", "SavePlan",
           "folder_digest", "tensor_digest", "plan_save", "resolve_refs"]

#: Where a self-contained model directory keeps its copies of pretrained folders.
COPIES_DIR = "pretrained"
#: The most files a pretrained folder may hold (hidden ones not counted).
MAX_FOLDER_FILES = 10_000
#: The most bytes a pretrained folder may hold: 256 GiB.
MAX_FOLDER_BYTES = 1 << 38
_FOLDER_HINT = ("a pretrained folder is one model's folder (such as a Hugging Face snapshot): point the modality's "
                "options, or the model's reference, at that folder")

_folder_digests: dict[tuple, str] = {}


class WeightsRef(Section):
    """Encoder weights stored by reference: the values a pretrained folder gives them."""

    prefix: str = Field(description="state-dict prefix, inside the modality's encoder, of the weights it covers")
    path: str = Field(pattern=r"^[^\x00]+$", description="the folder: absolute, or relative to the model directory "
                      "(a copy inside it)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                        description="SHA-256 of the folder's files (names and contents; hidden files left out)")


def _unreadable(folder: Path, exc: OSError) -> GramxError:
    return GramxError(f"{folder}: cannot read {exc.filename} ({exc.strerror}), so gramx cannot check the folder",
                      hint=_FOLDER_HINT)


def _files(folder: Path) -> list[Path]:
    """The folder's regular files (links to files count; hidden names and links to folders do not).

    More than :data:`MAX_FOLDER_FILES` of them, or an entry that cannot be read, is an error;
    a path that is no folder holds none.
    """
    def refuse(exc: OSError):
        raise _unreadable(folder, exc)

    if not folder.is_dir():
        return []
    found = []
    for root, dirs, names in os.walk(folder, onerror=refuse):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [p for p in (Path(root, n) for n in names if not n.startswith(".")) if p.is_file()]
        if len(found) > MAX_FOLDER_FILES:
            raise GramxError(f"{folder}: holds more than {MAX_FOLDER_FILES:,} files, too many for a pretrained folder, "
                             "so gramx does not hash it", hint=_FOLDER_HINT)
    return sorted(found)


def folder_digest(folder: str | Path) -> str:
    """SHA-256 over the relative names, sizes and contents of a folder's files, hidden ones left out.

    Computed once per process while no file's size or modification time changes. A folder
    too large to be a model's (see the module docstring) is refused before any hashing.
    """
    folder = Path(folder).resolve()
    try:
        stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in _files(folder)]
    except OSError as exc:
        raise _unreadable(folder, exc) from None
    if sum(st.st_size for _, st in stats) > MAX_FOLDER_BYTES:
        raise GramxError(f"{folder}: holds more than {MAX_FOLDER_BYTES >> 30} GiB, too much for a pretrained folder, "
                         "so gramx does not hash it", hint=_FOLDER_HINT)
    stamp = (str(folder), tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    if stamp not in _folder_digests:
        digest = hashlib.sha256()
        for name, st in stats:
            digest.update(f"{name}\0{st.st_size}\0".encode())
            try:
                with (folder / name).open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        digest.update(chunk)
            except OSError as exc:
                raise _unreadable(folder, exc) from None
        _folder_digests[stamp] = digest.hexdigest()
    return _folder_digests[stamp]


def tensor_digest(tensor: torch.Tensor) -> bytes:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(memoryview(data.numpy()))
    return digest.digest()


class PretrainedWeights:
    """Which parameters of one modality's encoder hold a pretrained folder's values, as built.

    Create it right after the encoder is built (and adapted): every frozen parameter under a
    prefix of ``encoder.pretrained_weights`` then still holds the folder's values.
    """

    def __init__(self, name: str, encoder: nn.Module):
        declared = getattr(encoder, "pretrained_weights", None) or {}
        if not isinstance(declared, Mapping):
            raise PluginError(f"modality {name!r}: its encoder's pretrained_weights must map state-dict prefixes "
                              f"to folders, not {type(declared).__name__}")
        self.name = name
        self.folders = {str(prefix): Path(folder).resolve() for prefix, folder in declared.items()}
        self.digests: dict[str, tuple[str, bytes]] = {}
        for key, value in encoder.state_dict(keep_vars=True).items():
            prefix = self.prefix_of(key)
            if prefix is not None and isinstance(value, nn.Parameter) and not value.requires_grad:
                self.digests[key] = (prefix, tensor_digest(value))
        self.shas = {prefix: folder_digest(folder) for prefix, folder in self.folders.items()} if self.digests else {}

    def prefix_of(self, key: str) -> str | None:
        """The declared prefix ``key`` falls under, if any."""
        return next((prefix for prefix in self.folders if key.startswith(prefix)), None)

    def unchanged(self, encoder: nn.Module) -> dict[str, str]:
        """``{state-dict key: prefix}`` of the parameters that are frozen and still hold their folder's values."""
        state = encoder.state_dict(keep_vars=True)
        return {key: prefix for key, (prefix, digest) in self.digests.items()
                if key in state and not state[key].requires_grad and tensor_digest(state[key]) == digest}

    def referenced(self, refs: list[WeightsRef]) -> set[str]:
        """The state-dict keys ``refs`` cover: frozen as built, under a referenced prefix."""
        prefixes = {ref.prefix for ref in refs}
        return {key for key, (prefix, _) in self.digests.items() if prefix in prefixes}

    def check(self, refs: list[WeightsRef]) -> None:
        """The folders the encoder loaded hold what ``refs`` recorded; a clear error otherwise."""
        for ref in refs:
            if ref.prefix not in self.shas:
                raise GramxError(
                    f"modality {self.name!r}: the model takes the weights under {ref.prefix!r} from {ref.path}, but "
                    "its encoder loads no frozen pretrained weights there",
                    hint="was the model saved with another version of the modality's plugin?")
            if self.shas[ref.prefix] != ref.sha256:
                raise GramxError(
                    f"modality {self.name!r}: its encoder loaded {self.folders[ref.prefix]}, whose files differ from "
                    f"the folder the model was saved with ({ref.path}, SHA-256 {ref.sha256[:12]}...)",
                    hint="point the modality's options at the original folder, or restore its files")


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return fn(value) if isinstance(value, str) else value


def _names_folder(text: str, folder: Path) -> bool:
    if not text or "\0" in text:
        return False
    try:
        return Path(text).expanduser().resolve() == folder
    except (OSError, RuntimeError, ValueError):
        return False


@dataclass
class SavePlan:
    """What saving writes besides the weights: keys left out, references, configs, folders to copy in."""

    skipped: set[str] = field(default_factory=set)
    refs: dict[str, list[WeightsRef]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    copies: dict[str, Path] = field(default_factory=dict)


def plan_save(encoders: Mapping[str, nn.Module], weights: Mapping[str, PretrainedWeights],
              configs: Mapping[str, dict], output: str | Path, self_contained: bool = False) -> SavePlan:
    """Which encoder weights a model directory at ``output`` stores by reference, and how.

    ``skipped`` holds model state-dict keys (``encoders.NAME.KEY``); ``refs`` and ``configs``
    the references and plugin configs per modality; ``copies`` the folders to copy into the
    directory (relative path -> folder). A folder inside ``output`` itself (a copy the
    directory being replaced holds) is copied again, like every folder of a self-contained save.
    """
    plan = SavePlan(configs={name: copy.deepcopy(config) for name, config in configs.items()})
    output = Path(output).resolve()
    for name, tracker in weights.items():
        unchanged = tracker.unchanged(encoders[name])
        plan.refs[name] = []
        for prefix in sorted(set(unchanged.values())):
            folder, sha = tracker.folders[prefix], tracker.shas[prefix]
            path = str(folder)
            if self_contained or folder.is_relative_to(output):
                path = f"{COPIES_DIR}/{folder.name if folder.name.endswith(sha[:12]) else f'{folder.name}-{sha[:12]}'}"
                renamed = _map_strings(plan.configs[name], lambda s: path if _names_folder(s, folder) else s)
                if renamed == plan.configs[name] and plan.copies.get(path) != folder:
                    continue  # no option names the folder (the plugin finds it by itself): store its weights
                plan.configs[name] = renamed
                plan.copies[path] = folder
            plan.refs[name].append(WeightsRef(prefix=prefix, path=path, sha256=sha))
            plan.skipped |= {f"encoders.{name}.{key}" for key, p in unchanged.items() if p == prefix}
    return plan


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder)
    except (OSError, RuntimeError):  # a link loop
        return False


def resolve_refs(name: str, refs: list[WeightsRef], config: dict,
                 model_dir: str | Path) -> tuple[list[WeightsRef], dict]:
    """Check the folders ``refs`` name; returns them with absolute paths, and the plugin config to match.

    A relative path is a copy inside ``model_dir`` (one leading outside it is refused): the
    config's strings spelling it become the absolute path. A missing or changed folder is a
    :class:`gramx.GramxError` that says which and what to do.
    """
    model_dir = Path(model_dir).resolve()
    resolved = []
    for ref in refs:
        folder = Path(ref.path)
        if not folder.is_absolute():
            folder = model_dir / folder
            if not _inside(folder, model_dir):
                raise GramxError(
                    f"{model_dir}: modality {name!r} takes its frozen pretrained weights from {ref.path}, which leads "
                    "outside the model directory; a relative reference names a copy inside it",
                    hint="the config.json was edited: use the model directory as it was written (gramx export)")
            config = _map_strings(config, lambda s, ref=ref, folder=folder: str(folder) if s == ref.path else s)
        if not folder.is_dir():
            raise GramxError(
                f"{model_dir}: modality {name!r} takes its frozen pretrained weights from {folder}, which is missing",
                hint="put that folder back (the model stores only a reference to it), or load the model where it "
                "exists and write a self-contained copy for sharing (`gramx export MODEL -o COPY`)")
        if folder_digest(folder) != ref.sha256:
            raise GramxError(
                f"{model_dir}: modality {name!r} takes its frozen pretrained weights from {folder}, whose files have "
                f"changed since the model was saved (SHA-256 {folder_digest(folder)[:12]}..., expected "
                f"{ref.sha256[:12]}...)",
                hint="restore the folder's original files (the model stores only a reference to them)")
        resolved.append(ref.model_copy(update={"path": str(folder)}))
    return resolved, config
