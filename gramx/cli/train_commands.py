"""The commands that make models: ``gramx train``, ``extend``, ``export``, ``shards`` and ``config``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from gramx.cli.options import Commands, count, modalities, modalities_option, resume_option, run_file_options
from gramx.cli.reference import render as render_reference
from gramx.data.shards import SHARDS, write_shards
from gramx.extend.grow import add_modalities, bridge_spaces, load_bridge_config
from gramx.files.atomic import check_output
from gramx.model.directory import MODEL_DIR
from gramx.model.model import load_model
from gramx.plugins.host import get_host
from gramx.train.config import RunConfig, config_schema, load_config
from gramx.train.loop import train

__all__ = ["register"]


def _run_config(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.set or []) + ([f"device={args.device}"] if getattr(args, "device", None) else [])
    return load_config(args.config, overrides)


def _written(path: Path) -> int:
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, once
        print(f"model written to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model as a run file describes."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _written(train(_run_config(args), resume=args.resume, overwrite=args.overwrite))


def cmd_extend_add(args: argparse.Namespace) -> int:
    """Add the run file's new modalities to a trained model, keeping its space frozen."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _written(add_modalities(args.base, _run_config(args), resume=args.resume, overwrite=args.overwrite))


def cmd_extend_bridge(args: argparse.Namespace) -> int:
    """Bridge a leaf space into a base space through a shared modality, without paired data."""
    overrides = list(args.set or []) + ([f"device={args.device}"] if args.device else [])
    return _written(bridge_spaces(load_bridge_config(args.config, overrides), overwrite=args.overwrite))


def cmd_export(args: argparse.Namespace) -> int:
    """Write a self-contained copy of a model directory, for sharing."""
    check_output(args.output, MODEL_DIR, args.overwrite)  # before loading the model
    model = load_model(args.model, modalities=modalities(args))
    path = model.save_pretrained(args.output, overwrite=args.overwrite, self_contained=True)
    print(f"self-contained model written to {path}")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    """Write a manifest's rows into tar shards (webdataset layout) with a shards.json index."""
    check_output(args.output, SHARDS, args.overwrite)  # before the work, not after
    index = write_shards(args.manifest, args.output, args.shard_size, on_error=args.on_error,
                         overwrite=args.overwrite, allow_outside=args.allow_outside)
    if index["errors"].count:
        print(f"gramx: {index['errors'].summary()}", file=sys.stderr)
    if index["left_out_columns"]:
        print(f"gramx: left out columns that are no installed modality: {', '.join(index['left_out_columns'])}",
              file=sys.stderr)
    print(f"wrote {index['rows']} rows into {len(index['shards'])} shards in {args.output}; train on them with "
          f"data.train: {args.output}")
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    """Print the configuration reference (Markdown) for the installed modalities."""
    print(render_reference(get_host().modalities()), end="")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema of a run file."""
    print(json.dumps(config_schema(), indent=2))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the resolved configuration (defaults filled in, paths absolute)."""
    data = _run_config(args).model_dump(mode="json")
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def register(commands: Commands) -> None:
    """Add ``train``, ``extend add|bridge``, ``export``, ``shards`` and ``config reference|schema|show``."""
    train_command = commands.add("train", "train a model from a run file", cmd_train)
    train_command.add_argument("config", metavar="RUN.yaml", help="run configuration")
    resume_option(train_command)
    run_file_options(train_command)

    extend = commands.group("extend", "grow a trained model: add a modality, or bridge two spaces")
    add = extend.add("add", "add modalities to a frozen trained model", cmd_extend_add)
    add.add_argument("base", metavar="MODEL", help="trained model directory to extend")
    add.add_argument("config", metavar="RUN.yaml", help="run file naming the existing and the new modalities")
    resume_option(add)
    run_file_options(add)
    bridge = extend.add("bridge", "bridge a leaf space into a base space", cmd_extend_bridge)
    bridge.add_argument("config", metavar="BRIDGE.yaml", help="bridge configuration")
    run_file_options(bridge)

    export = commands.add("export", "write a self-contained copy of a model directory (for sharing)", cmd_export)
    export.add_argument("model", metavar="MODEL", help="model directory")
    export.add_argument("-o", "--output", required=True, type=Path, help="the copy to write: frozen pretrained "
                        "folders the model references are copied into it")
    export.add_argument("--overwrite", action="store_true", help="replace the output even if it is not a model "
                        "directory, or holds files gramx did not write there (default: refuse)")
    modalities_option(export)

    shards = commands.add("shards", "write a manifest's rows into tar shards for streamed training", cmd_shards)
    shards.add_argument("manifest", metavar="MANIFEST", help="JSONL or CSV manifest")
    shards.add_argument("-o", "--output", required=True, type=Path, help="shard folder to write")
    shards.add_argument("--shard-size", type=count(), default=1000, help="rows per shard (default 1000)")
    shards.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="a row whose file cannot be read: stop (default) or leave it out and report it")
    shards.add_argument("--overwrite", action="store_true", help="replace the output even if it is not a shard folder")
    shards.add_argument("--allow-outside", action="store_true", help="copy files from outside the manifest's folder "
                        "too (refused by default: shards are made to be shared)")

    config = commands.group("config", "run configuration: reference, schema and resolved view")
    config.add("reference", "print every key of run and bridge files (Markdown)", cmd_config_reference)
    config.add("schema", "print the JSON schema of run files", cmd_config_schema)
    show = config.add("show", "print a run file with defaults filled in and paths resolved", cmd_config_show)
    show.add_argument("config", metavar="RUN.yaml")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    run_file_options(show, writes=False)
