"""``gramx import``: a CLIP, SigLIP or CLAP folder becomes an ordinary gramx model directory.

Each tower becomes a modality (``text`` + ``image`` or ``text`` + ``audio``) served by its
usual plugin with the options that make it use the checkpoint as it is: its own tokenizer,
image processor or feature extractor from the same folder, its own projection
(``output: projected``), frozen, and an identity head, so ``embed`` gives what
``get_text_features`` / ``get_image_features`` / ``get_audio_features`` give (L2-normalised)
and zero-shot works as in the original. The towers' weights are not copied: the model
directory references the folder (path + SHA-256), unless ``self_contained`` copies it in.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gramx.files.atomic import check_output
from gramx.model.schema import HeadConfig
from gramx.errors import ConfigError, PluginError
from gramx.model.model import GramxModel
from gramx.model.directory import MODEL_DIR
from gramx.model.model import saved_plugin
from gramx.model.schema import ModelConfig, SavedModality
from gramx.plugins.host import get_host
from gramx.files.validation import validate
from gramx.version import __version__
from gramx_hf.towers import ARCHITECTURES, feature_dim, two_tower

__all__ = ["PLUGINS", "tower_options", "import_space", "add_import_command"]

#: The distribution that serves each modality of an imported space.
PLUGINS = {"text": "gramx-text", "image": "gramx-video[hf]", "audio": "gramx-audio[hf]"}


def _config(source: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(source), local_files_only=True)


def _text_length(source: Path, architecture: str) -> int:
    from transformers import AutoTokenizer

    usable = _config(source).text_config.max_position_embeddings - ARCHITECTURES[architecture].position_offset
    declared = AutoTokenizer.from_pretrained(str(source), local_files_only=True).model_max_length
    return min(usable, declared) if declared and declared < 1_000_000 else usable


def tower_options(source: str | Path) -> dict[str, dict[str, Any]]:
    """The run-file entries (``options``, ``head``) that serve the towers of a two-tower folder.

    The same entries in a run file train on the checkpoint's towers, e.g. with ``lora``
    added to one of them.
    """
    source = Path(source).expanduser().resolve()
    architecture, spec = two_tower(source)
    path = str(source)
    options = {
        "text": {"model": path, "output": "projected", "freeze": True,
                 "max_length": _text_length(source, architecture), "padding": spec.padding},
        "image": {"encoder": "hf", "model_path": path, "output": "projected", "preprocess": "processor",
                  "freeze": True, "augment": False},
        "audio": {"encoder": "hf", "model_path": path, "output": "projected", "features": "processor",
                  "freeze": True},
    }
    return {name: {"options": options[name], "head": {"identity": True}} for name in spec.towers}


def import_space(source: str | Path, output: str | Path, overwrite: bool = False,
                 self_contained: bool = False) -> Path:
    """Write the gramx model directory of a CLIP, SigLIP or CLAP folder at ``output``; returns ``output``.

    A model directory at ``output`` is replaced; anything else only with ``overwrite``.
    ``self_contained`` copies the checkpoint folder into the directory (for sharing)
    instead of referencing it.
    """
    check_output(output, MODEL_DIR, overwrite)  # before any work
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ConfigError(f"{source}: no such folder", hint="give the folder of a downloaded CLIP, SigLIP or CLAP "
                          "checkpoint (config.json, weights, tokenizer and processor files)")
    architecture, _ = two_tower(source)
    host = get_host()
    modalities, plugin_configs = {}, {}
    for name, entry in sorted(tower_options(source).items()):  # as a run builds them
        try:
            modality = host.get_modality(name)
        except PluginError as exc:
            raise PluginError(f"importing a {architecture} needs the {name!r} modality",
                              hint=f"pip install '{PLUGINS[name]}'") from exc
        plugin_configs[name] = validate(modality.config, entry["options"], "invalid options", ("modalities", name))
        modalities[name] = SavedModality(plugin=saved_plugin(name), config=plugin_configs[name].model_dump(mode="json"),
                                         head=HeadConfig(**entry["head"]))
    config = ModelConfig(
        gramx_version=__version__, dim=feature_dim(_config(source), "text"), modalities=modalities, score="cosine",
        training={"imported_from": str(source), "architecture": architecture,
                  "loss": f"the {architecture} checkpoint's own contrastive training (imported, cosine similarity)"},
        lineage=[{"operation": "import", "source": str(source), "architecture": architecture}],
    )
    model = GramxModel(config, plugin_configs)
    return model.save_pretrained(output, overwrite=overwrite, self_contained=self_contained)


def _cmd_import(args: argparse.Namespace) -> int:
    path = import_space(args.source, args.output, overwrite=args.overwrite, self_contained=args.self_contained)
    print(f"model written to {path}")
    return 0


def add_import_command(subparsers: Any) -> None:
    """Add ``gramx import DIR -o MODEL_DIR`` to the ``gramx`` command line."""
    parser = subparsers.add_parser(
        "import", help="import a CLIP, SigLIP or CLAP checkpoint folder as a gramx model",
        description="Import a two-tower transformers checkpoint (CLIPModel, SiglipModel, ClapModel) from a local "
        "folder as a gramx model directory: its towers, tokenizer, processors and projections, frozen; "
        "their weights are referenced, not copied.")
    parser.add_argument("source", metavar="DIR", help="the checkpoint folder (config.json, weights, tokenizer, "
                        "processor files)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="model directory to write")
    parser.add_argument("--self-contained", action="store_true", help="copy the checkpoint folder into the model "
                        "directory (for sharing) instead of referencing it")
    parser.add_argument("--overwrite", action="store_true", help="replace the output even if it is not a model "
                        "directory (default: refuse)")
    parser.set_defaults(func=_cmd_import)
