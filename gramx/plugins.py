"""Plugin discovery and the modality registry.

Plugins are found through entry points in group ``gramx`` and loaded one at a time: a
plugin that fails to import, raises inside its hook or registers an invalid modality is
recorded with its error and skipped, and nothing it registered is kept. Everything else
keeps working. ``GRAMX_DISABLE_PLUGINS=a,b`` turns plugins off by name.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from gramx import hookspecs
from gramx.errors import PluginError
from gramx.modality import Modality

__all__ = [
    "PluginRecord",
    "PluginHost",
    "get_host",
    "reset",
    "register_plugin",
    "get_modality",
    "available_modalities",
]

ENTRY_POINT_GROUP = "gramx"
DISABLE_ENV = "GRAMX_DISABLE_PLUGINS"


@dataclass
class PluginRecord:
    """What ``gramx plugins list`` shows for one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    modalities: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False

    @property
    def status(self) -> str:
        if self.disabled:
            return "disabled"
        return "error" if self.error else "ok"


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class PluginHost:
    """A pluggy manager plus the modalities its plugins registered."""

    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._modalities: dict[str, tuple[Modality, str]] = {}

    def discover(self) -> None:
        """Load every installed plugin from the ``gramx`` entry-point group."""
        disabled = _disabled_names()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            record = PluginRecord(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            )
            self.records[ep.name] = record
            if ep.name in disabled or (record.distribution in disabled):
                record.disabled = True
                self.pm.set_blocked(ep.name)
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the host
                record.error = _describe(exc)
                continue
            self._collect(ep.name)

    def register_plugin(self, plugin: Any, name: str | None = None) -> PluginRecord:
        """Register a plugin object (a module or any object with hookimpls) directly."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        record = self.records.setdefault(name, PluginRecord(name=name))
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            record.error = _describe(exc)
            return record
        self._collect(name)
        return record

    def _collect(self, plugin_name: str) -> None:
        """Run one plugin's registration hook; keep its modalities only if all is well."""
        record = self.records[plugin_name]
        plugin = self.pm.get_plugin(plugin_name)
        impls = [i for i in self.pm.hook.gramx_register_modalities.get_hookimpls() if i.plugin is plugin]
        staged: list[Modality] = []

        def register(modality: Modality) -> None:
            if not isinstance(modality, Modality):
                raise PluginError(f"register() expects a gramx.Modality, got {type(modality).__name__}")
            modality.default_config()  # defaults must validate
            staged.append(modality)

        kwargs = {"register": register}
        try:
            for impl in impls:
                impl.function(*(kwargs[arg] for arg in impl.argnames))
            self._check_unique(staged, plugin_name)
        except Exception as exc:
            record.error = _describe(exc)
            return
        for modality in staged:
            self._modalities[modality.name] = (modality, plugin_name)
        record.modalities = [m.name for m in staged]

    def _check_unique(self, staged: list[Modality], plugin_name: str) -> None:
        seen: dict[str, str] = {name: owner for name, (_, owner) in self._modalities.items()}
        for modality in staged:
            if modality.name in seen:
                raise PluginError(
                    f"modality {modality.name!r} is registered by both plugin {seen[modality.name]!r} "
                    f"and plugin {plugin_name!r}; disable one with {DISABLE_ENV}"
                )
            seen[modality.name] = plugin_name

    def add_commands(self, subparsers) -> None:
        """Let every loaded plugin add CLI sub-commands; a failing plugin is recorded and skipped."""
        for impl in self.pm.hook.gramx_register_commands.get_hookimpls():
            try:
                impl.function(subparsers)
            except Exception as exc:
                record = self.records.setdefault(impl.plugin_name, PluginRecord(name=impl.plugin_name))
                record.error = _describe(exc)

    def get_modality(self, name: str) -> Modality:
        """The registered modality ``name``; the error lists what is available."""
        if name in self._modalities:
            return self._modalities[name][0]
        broken = [r for r in self.records.values() if r.error]
        hint = f"install a plugin that provides it (e.g. pip install gramx-{name})"
        if broken:
            hint += "; these plugins failed to load: " + ", ".join(f"{r.name} ({r.error})" for r in broken)
        raise PluginError(
            f"unknown modality {name!r}; available: {', '.join(sorted(self._modalities)) or 'none'}", hint
        )

    def provider(self, name: str) -> PluginRecord:
        """The record of the plugin that registered modality ``name``."""
        self.get_modality(name)
        return self.records[self._modalities[name][1]]

    def modalities(self) -> dict[str, Modality]:
        """All registered modalities by name."""
        return {name: modality for name, (modality, _) in sorted(self._modalities.items())}


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, discovering installed plugins on first use."""
    global _host
    if _host is None:
        _host = PluginHost()
        _host.discover()
    return _host


def reset() -> None:
    """Forget every plugin; the next :func:`get_host` discovers again (for tests)."""
    global _host
    _host = None


def register_plugin(plugin: Any, name: str | None = None) -> PluginRecord:
    """Register a plugin object in the process-wide host (tests, notebooks)."""
    return get_host().register_plugin(plugin, name)


def get_modality(name: str) -> Modality:
    """Look up a registered modality by name."""
    return get_host().get_modality(name)


def available_modalities() -> dict[str, Modality]:
    """Every registered modality by name."""
    return get_host().modalities()
