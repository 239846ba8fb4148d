"""Plugin discovery and the modality registry: whole plugin or nothing.

Plugins are found through entry points in group ``gramx`` and loaded one at a time. Each
plugin's hooks run against staging areas: the modalities it registers and the CLI commands
it adds are kept only when every hook of the plugin succeeds. A plugin that fails to import,
raises inside a hook or registers something invalid is unregistered from pluggy, recorded
with its error (``gramx plugins list`` shows it) and contributes nothing; everything else
keeps working. ``GRAMX_DISABLE_PLUGINS=a,b`` turns plugins off by name.
"""

from __future__ import annotations

import argparse
import difflib
import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from gramx.errors import ConfigError, PluginError
from gramx.losses.table import LOSS_TYPES, LossType
from gramx.plugins import hookspecs
from gramx.plugins.modality import Modality

__all__ = [
    "PluginStatus",
    "PluginHost",
    "get_host",
    "reset",
    "register_plugin",
    "get_modality",
    "available_modalities",
    "loss_types",
    "loss_type",
]

ENTRY_POINT_GROUP = "gramx"
DISABLE_ENV = "GRAMX_DISABLE_PLUGINS"


@dataclass
class PluginStatus:
    """One plugin as the registry knows it: where it comes from, what it added, or why not."""

    name: str
    distribution: str | None = None
    version: str | None = None
    modalities: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``error`` or ``disabled``."""
        if self.disabled:
            return "disabled"
        return "error" if self.error else "ok"

    def describe(self) -> str:
        """``name (distribution, status)``, for hints."""
        return f"{self.name} ({self.distribution or 'no distribution'}, {self.status})"


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class StagedCommands:
    """Stands in for the ``gramx`` sub-parsers while one plugin's command hook runs.

    ``add_parser(name, **kwargs)`` behaves as argparse's; the commands reach the real
    parser (:meth:`attach`) only if the plugin's hooks all succeeded.
    """

    def __init__(self):
        self._staging = argparse.ArgumentParser(prog="gramx").add_subparsers()
        self.added: list[tuple[str, dict[str, Any], argparse.ArgumentParser]] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = self._staging.add_parser(name, **kwargs)
        self.added.append((name, kwargs, parser))
        return parser

    def check(self) -> None:
        """Every command has a handler (``parser.set_defaults(func=...)``)."""
        for name, _, parser in self.added:
            if not callable(parser.get_default("func")):
                raise PluginError(f"command {name!r} has no handler: call parser.set_defaults(func=handler)")

    def attach(self, subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser] = ()) -> None:
        """Add the staged commands, with their arguments and defaults, to ``subparsers``.

        ``parents`` give every command the host's common options (e.g. ``--debug``) unless
        the plugin defined an option of the same name itself.
        """
        for name, kwargs, parser in self.added:
            if name in subparsers.choices:
                raise PluginError(f"command {name!r} already exists")
        for name, kwargs, parser in self.added:
            options = {k: v for k, v in kwargs.items() if k not in ("parents", "add_help")}
            own = {flag for action in parser._actions for flag in action.option_strings}
            common = [p for p in parents if not own & {f for a in p._actions for f in a.option_strings}]
            subparsers.add_parser(name, parents=[parser, *common], add_help=False, **options)


class PluginHost:
    """A pluggy manager plus what its plugins registered: modalities and CLI commands."""

    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginStatus] = {}
        self._modalities: dict[str, tuple[Modality, str]] = {}
        self._objectives: dict[str, tuple[LossType, str]] = {}
        self._commands: dict[str, StagedCommands] = {}

    def discover(self) -> None:
        """Load every installed plugin from the ``gramx`` entry-point group."""
        disabled = _disabled_names()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            record = PluginStatus(
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
            except Exception as exc:  # a broken plugin must not break the host
                record.error = _describe(exc)
                continue
            self._load(ep.name, plugin)

    def register_plugin(self, plugin: Any, name: str | None = None) -> PluginStatus:
        """Register a plugin object (a module or any object with hookimpls) directly."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self.records.setdefault(name, PluginStatus(name=name))
        self._load(name, plugin)
        return self.records[name]

    def _load(self, name: str, plugin: Any) -> None:
        """Register ``plugin`` and run its hooks; keep what it added only if all of them succeed."""
        record = self.records[name]
        staged: list[Modality] = []
        objectives: dict[str, LossType] = {}
        commands = StagedCommands()

        def register(modality: Modality) -> None:
            if not isinstance(modality, Modality):
                raise PluginError(f"register() expects a gramx.Modality, got {type(modality).__name__}")
            modality.default_config()  # defaults must validate
            staged.append(modality)

        def register_objective(objective_name: str, loss_type: LossType) -> None:
            if not isinstance(loss_type, LossType):
                raise PluginError(f"register() expects a gramx.LossType, got {type(loss_type).__name__}")
            taken = {**LOSS_TYPES, **self._objectives, **objectives}
            if objective_name in taken:
                owner = "gramx" if objective_name in LOSS_TYPES else self._objectives[objective_name][1]
                raise PluginError(f"loss type {objective_name!r} is registered by both {owner!r} and plugin {name!r}")
            objectives[objective_name] = loss_type

        try:
            self.pm.register(plugin, name=name)
            self._call(self.pm.hook.gramx_register_modalities, plugin, register=register)
            self._check_unique(staged, name)
            self._call(self.pm.hook.gramx_register_objectives, plugin, register=register_objective)
            self._call(self.pm.hook.gramx_register_commands, plugin, subparsers=commands)
            commands.check()
        except Exception as exc:
            record.error = _describe(exc)
            if self.pm.get_plugin(name) is plugin:
                self.pm.unregister(name=name)
            return
        for modality in staged:
            self._modalities[modality.name] = (modality, name)
        record.modalities = [m.name for m in staged]
        self._objectives.update({key: (value, name) for key, value in objectives.items()})
        record.objectives = list(objectives)
        record.commands = [command for command, _, _ in commands.added]
        self._commands[name] = commands

    @staticmethod
    def _call(hook: pluggy.HookCaller, plugin: Any, **arguments: Any) -> None:
        """Call ``plugin``'s implementations of ``hook`` alone, passing the arguments each one asks for."""
        for impl in hook.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(*(arguments[arg] for arg in impl.argnames))

    def _check_unique(self, staged: list[Modality], plugin_name: str) -> None:
        seen: dict[str, str] = {name: owner for name, (_, owner) in self._modalities.items()}
        for modality in staged:
            if modality.name in seen:
                raise PluginError(
                    f"modality {modality.name!r} is registered by both plugin {seen[modality.name]!r} "
                    f"and plugin {plugin_name!r}; disable one with {DISABLE_ENV}"
                )
            seen[modality.name] = plugin_name

    def _drop(self, name: str, exc: BaseException) -> None:
        """Take back everything plugin ``name`` added and record why."""
        record = self.records[name]
        record.error = _describe(exc)
        for modality in record.modalities:
            del self._modalities[modality]
        for objective in record.objectives:
            del self._objectives[objective]
        record.modalities, record.objectives, record.commands = [], [], []
        self._commands.pop(name, None)
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(name=name)

    def add_commands(self, subparsers: argparse._SubParsersAction,
                     parents: list[argparse.ArgumentParser] = ()) -> None:
        """Add the commands of every working plugin to the ``gramx`` parser (with the common ``parents``)."""
        for name, commands in list(self._commands.items()):
            try:
                commands.attach(subparsers, parents)
            except PluginError as exc:
                self._drop(name, exc)

    def get_modality(self, name: str) -> Modality:
        """The registered modality ``name``; the error lists what is available."""
        if name in self._modalities:
            return self._modalities[name][0]
        raise PluginError(
            f"unknown modality {name!r}; available: {', '.join(sorted(self._modalities)) or 'none'}",
            self._missing_hint(name),
        )

    def _missing_hint(self, name: str) -> str:
        """Where modality ``name`` might come from, from what the entry points say."""
        same = self.records.get(name)
        if same is not None and same.status != "ok":
            return f"plugin {same.describe()} would provide it" + (f": {same.error}" if same.error else "")
        close = difflib.get_close_matches(name, self._modalities, n=1)
        off = [r for r in self.records.values() if r.status != "ok"]
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            "a modality comes from an installed plugin distribution; `gramx plugins list` shows them")
        if off:
            hint += "; these installed plugins are not working and may provide it: " + ", ".join(
                r.describe() + (f": {r.error}" if r.error else "") for r in off
            )
        return hint

    def provider(self, name: str) -> PluginStatus:
        """The record of the plugin that registered modality ``name``."""
        self.get_modality(name)
        return self.records[self._modalities[name][1]]

    def add_lora(self, name: str, encoder: Any, lora: Any) -> Any:
        """Modality ``name``'s encoder with LoRA adapters, from the first plugin that adds them."""
        adapted = self.pm.hook.gramx_add_lora(modality=name, encoder=encoder, lora=lora)
        if adapted is None:
            raise PluginError(f"modality {name!r} asks for LoRA adapters, but no installed plugin adds them",
                              hint="pip install gramx-hf (LoRA through peft), or remove the modality's lora")
        return adapted

    def modalities(self) -> dict[str, Modality]:
        """All registered modalities by name."""
        return {name: modality for name, (modality, _) in sorted(self._modalities.items())}

    def objectives(self) -> dict[str, LossType]:
        """The loss types plugins registered, by name (:class:`gramx.losses.table.LossType`)."""
        return {name: loss_type for name, (loss_type, _) in sorted(self._objectives.items())}


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


def register_plugin(plugin: Any, name: str | None = None) -> PluginStatus:
    """Register a plugin object in the process-wide host (tests, notebooks)."""
    return get_host().register_plugin(plugin, name)


def get_modality(name: str) -> Modality:
    """Look up a registered modality by name."""
    return get_host().get_modality(name)


def available_modalities() -> dict[str, Modality]:
    """Every registered modality by name."""
    return get_host().modalities()


def loss_types() -> dict[str, LossType]:
    """Every loss type: the built-in ones and those installed plugins registered."""
    return {**LOSS_TYPES, **get_host().objectives()}


def loss_type(name: str) -> LossType:
    """The loss type ``name``; the error lists the available ones."""
    types = loss_types()
    if name not in types:
        raise ConfigError(f"unknown loss.type {name!r}; available: {', '.join(sorted(types))}",
                          hint="an objective a plugin adds appears once the plugin is installed (gramx plugins list)")
    return types[name]
