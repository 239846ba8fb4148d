"""Hook specifications: what a gramx plugin may implement.

A plugin is a module (or object) named by an entry point in group ``gramx`` whose
functions are decorated with :data:`gramx.hookimpl`. Implementations may take fewer
arguments than a spec lists (each gets only the arguments it names); arguments are only
ever appended, never renamed. A plugin is all or nothing: if any of its hooks raises,
nothing it registered is kept and ``gramx plugins list`` shows the error.
"""

from __future__ import annotations

import pluggy

PROJECT = "gramx"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gramx_register_modalities(register):
    """Register the modalities this plugin provides.

    Called once per plugin when gramx discovers plugins. Call ``register`` with a
    :class:`gramx.Modality` for each modality; its ``name`` must be unique among all
    installed plugins. An exception raised here, or an invalid modality, disables the
    whole plugin (it is listed with its error by ``gramx plugins list``) while every
    other plugin keeps working.

    :param register: ``register(modality: gramx.Modality) -> None``.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec
def gramx_register_objectives(register):
    """Register loss types that run files may name as ``loss.type``.

    Called once per plugin when gramx discovers plugins, after
    :func:`gramx_register_modalities`. Call ``register(name, loss_type)`` with a unique name
    (not a built-in one: gram, triangle, symile, pairwise, pairwise_all, pmrl, confu,
    gated_symile) and a :class:`gramx.LossType`: ``build(cfg, temperature, options)``
    returns the contrastive term, an ``nn.Module`` called as ``term(feats, masks)`` that
    returns a scalar and raises :class:`gramx.losses.NothingToContrast` when no sample of the
    batch can take part; ``score`` names the similarity models trained with it are scored by
    (a key of :data:`gramx.scores.similarity.SCORES`: ``volume``, ``area``, ``mip``, ``cosine`` or
    ``singular``). As with modalities, an exception here disables the whole plugin.

    :param register: ``register(name: str, loss_type: gramx.LossType) -> None``.
    :return: nothing.

    .. versionadded:: 0.2
    """


@hookspec
def gramx_register_commands(subparsers):
    """Add sub-commands to the ``gramx`` command line.

    Called once per plugin when gramx discovers plugins, after
    :func:`gramx_register_objectives`. Add commands with
    ``parser = subparsers.add_parser(name, help=...)`` (argparse's arguments) and give each
    a handler with ``parser.set_defaults(func=handler)``; the handler receives the parsed
    ``argparse.Namespace`` and returns an exit status. The commands join the ``gramx``
    parser only if every hook of the plugin succeeds: a hook that raises, or a command
    without a handler, disables the whole plugin (its modalities too) and records the error.

    :param subparsers: stands in for the ``gramx`` sub-parsers; it has ``add_parser``.
    :return: nothing.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def gramx_add_lora(modality, encoder, lora):
    """Add trainable low-rank adapters (LoRA) to an encoder's pretrained weights.

    Called when a model is built, right after ``build_encoder``, for each modality whose run
    file (or saved model) gives ``lora``. The encoder names its pretrained weights with its
    ``pretrained_weights`` attribute (``{state-dict prefix: folder}``, see
    :mod:`gramx.model.pretrained`); the adapters go into the layers of those weights named by
    ``lora.target_modules``, and the pretrained weights themselves stop requiring gradients.
    The first implementation that returns an encoder wins; gramx-hf implements it with peft.

    :param modality: the modality's name (for messages).
    :param encoder: the ``nn.Module`` the modality's ``build_encoder`` returned.
    :param lora: a :class:`gramx.model.schema.LoraConfig` (``r``, ``alpha``, ``dropout``,
        ``target_modules``).
    :return: the encoder with adapters (usually the same object, changed in place), or
        ``None`` to leave it to another plugin.

    .. versionadded:: 0.1
    """
