"""The ``gramx`` command: parse the arguments, call the library, print the result.

Each sub-command is a function ``cmd_<name>(args)``; :func:`build_parser` wires them up.
Errors are printed as one line plus a hint; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from gramx.atomic import check_output
from gramx.config import config_schema, load_config
from gramx.data import ErrorLog
from gramx.embed import embed_manifest
from gramx.errors import GramxError
from gramx.evaluate import evaluate
from gramx.extend import add_modalities, bridge_spaces, load_bridge_config
from gramx.index import INDEX, EmbeddingIndex, save_embeddings
from gramx.model import load_model
from gramx.model_dir import MODEL_DIR
from gramx.plugins import get_host, get_modality
from gramx.reference import render as render_reference
from gramx.shards import SHARDS, write_shards
from gramx.testing import check_modality
from gramx.train import train
from gramx.version import __version__

__all__ = ["main", "build_parser"]


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_plugins_list(args: argparse.Namespace) -> int:
    """List installed plugins, their modalities and their status."""
    host = get_host()
    records = sorted(host.records.values(), key=lambda r: r.name)
    modalities = host.modalities()
    if args.json:
        print(json.dumps([
            {"plugin": r.name, "modalities": r.modalities, "commands": r.commands, "version": r.version,
             "distribution": r.distribution, "status": r.status, "error": r.error,
             "descriptions": {m: modalities[m].description for m in r.modalities}}
            for r in records
        ], indent=2))
        return 0
    rows = [
        [r.name, ", ".join(r.modalities + r.commands) or "-", r.version or "-", r.distribution or "-", r.status,
         r.error or ""]
        for r in records
    ]
    _print_table(rows, ["plugin", "provides", "version", "distribution", "status", "error"])
    if modalities:
        print()
        _print_table([[name, host.provider(name).name, m.description or "-"] for name, m in modalities.items()],
                     ["modality", "plugin", "description"])
    return 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    """Run the conformance kit against an installed modality."""
    modality = get_modality(args.name)
    samples = args.sample or list(modality.samples)
    if not samples:
        raise GramxError(
            f"modality {args.name!r} ships no sample inputs", hint="pass one or more with --sample FILE"
        )
    for check in check_modality(modality, samples):
        print(f"ok  {check}")
    print(f"{args.name}: conforms to the gramx plugin contract ({len(samples)} sample(s))")
    return 0


def _load_run_config(args: argparse.Namespace):
    overrides = list(args.set or [])
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model as a run file describes."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = _load_run_config(args)
    path = train(config, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"model written to {path}")
    return 0


def cmd_extend_add(args: argparse.Namespace) -> int:
    """Add the run file's new modalities to a trained model, keeping its space frozen."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = add_modalities(args.base, _load_run_config(args), resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"model written to {path}")
    return 0


def cmd_extend_bridge(args: argparse.Namespace) -> int:
    """Bridge a leaf space into a base space through a shared modality, without paired data."""
    overrides = list(args.set or []) + ([f"device={args.device}"] if args.device else [])
    path = bridge_spaces(load_bridge_config(args.config, overrides), overwrite=args.overwrite)
    print(f"model written to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a self-contained copy of a model directory, for sharing."""
    check_output(args.output, MODEL_DIR, args.overwrite)  # before loading the model
    model = load_model(args.model, modalities=_modalities(args))
    path = model.save_pretrained(args.output, overwrite=args.overwrite, self_contained=True)
    print(f"self-contained model written to {path}")
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
    config = _load_run_config(args)
    data = config.model_dump(mode="json")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


_METRIC_KEYS = ("R@1", "R@5", "R@10", "MedR", "MeanR", "mAP")


def _print_report(report: dict) -> None:
    print(f"{report['tuples']} tuples")
    rows = [
        [kind, key] + [f"{metrics[k]:.2f}" if k in ("R@1", "R@5", "R@10", "mAP", "MeanR") else f"{metrics[k]:g}"
                       for k in _METRIC_KEYS]
        for kind in ("retrieval", "nway", "nway_cosine")
        for key, metrics in report[kind].items()
    ]
    if rows:
        print()
        _print_table(rows, ["kind", "query->candidates", *_METRIC_KEYS])
    if report["zeroshot"]:
        print()
        _print_table([[name, f"{acc:.2f}"] for name, acc in report["zeroshot"].items()],
                     ["zero-shot", "accuracy %"])


def _modalities(args: argparse.Namespace) -> list[str] | None:
    return [name.strip() for name in args.modalities.split(",")] if args.modalities else None


def _model(args: argparse.Namespace):
    return load_model(args.model, device=args.device or "auto", modalities=_modalities(args))


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval (pairwise + n-way) and zero-shot metrics of a model on a manifest."""
    model = _model(args)
    errors = ErrorLog()
    report = evaluate(model, args.manifest, classes=args.classes, template=args.template, batch_size=args.batch_size,
                      workers=args.workers, on_error=args.on_error, progress=not args.json, error_log=errors)
    if errors.count:
        print(f"gramx: {errors.summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed every row of a manifest into an index folder (per-modality .npy + safetensors, index.json)."""
    check_output(args.output, INDEX, args.overwrite)  # before the work, not after
    model = _model(args)
    errors = ErrorLog()
    emb = embed_manifest(model, args.manifest, batch_size=args.batch_size, workers=args.workers,
                         on_error=args.on_error, error_log=errors, progress=True)
    index = save_embeddings(emb, args.output, model, args.manifest, overwrite=args.overwrite)
    if errors.count:
        print(f"gramx: {errors.summary()}", file=sys.stderr)
    counts = ", ".join(f"{n} {m['count']}" for n, m in index["modalities"].items())
    print(f"embedded {len(emb)} tuples ({counts}) into {args.output}")
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


def cmd_search(args: argparse.Namespace) -> int:
    """Rank indexed items (one modality: cosine) or tuples (2+ modalities: Gram volume) for a query."""
    if (args.query is None) == (args.query_file is None):
        raise GramxError("give exactly one of --query TEXT or --query-file PATH")
    index = EmbeddingIndex.load(args.index)
    qmod = args.query_modality or ("text" if args.query is not None else None)
    if qmod is None:
        raise GramxError("--query-file needs --query-modality NAME (the file's modality, e.g. audio)")
    names = [m.strip() for m in args.modality.split(",") if m.strip()] if args.modality else None
    candidates = index.candidates(qmod, names)
    model = load_model(args.model, device=args.device or "auto", modalities=[qmod])  # the query's tower only
    value = args.query if args.query is not None else str(Path(args.query_file).resolve())
    score_name, hits = index.query(model, value, qmod, candidates, k=args.k)
    if args.json:
        results = [{"rank": h.rank, "id": h.id, score_name: h.score, "values": h.values} for h in hits]
        print(json.dumps({"query_modality": qmod, "candidates": candidates, "results": results}, indent=2))
        return 0
    _print_table([[str(h.rank), h.id, f"{h.score:.4f}", "  ".join(str(v) for v in h.values.values())] for h in hits],
                 ["rank", "id", score_name, "values"])
    return 0


EXAMPLES = """\
examples:
  gramx plugins list                                  the installed modalities
  gramx train examples/digits.yaml                    train audio + image + text together
  gramx eval runs/digits/model examples/data/digits/test.jsonl --classes examples/classes-digits.txt
  gramx embed runs/digits/model examples/data/digits/test.jsonl -o runs/digits/index
  gramx search runs/digits/model --index runs/digits/index --query "seven" --modality audio,image
  gramx extend add runs/digits-a/model examples/extend-add-audio.yaml
  gramx export runs/digits/model -o shared/digits   a copy that carries its pretrained folders
  gramx shards examples/data/digits/train.jsonl -o runs/digits-shards --shard-size 100
  gramx config reference                              every key of a run file

Relative paths in a run or bridge file resolve against that file's folder; paths typed on the
command line (arguments, --set) against the working folder. Nothing is ever written over a file
or folder gramx did not make, unless you pass --overwrite."""


def _count(minimum: int = 1):
    """The argparse type of a count option: a whole number of at least ``minimum``."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return count


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gramx`` command."""
    parser = argparse.ArgumentParser(
        prog="gramx", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Align any number of modalities in one embedding space with the Gram volume, and grow "
        "that space through plugins.")
    parser.add_argument("--version", action="version", version=f"gramx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    def command(group, name: str, help: str, func=None) -> argparse.ArgumentParser:
        sub = group.add_parser(name, parents=[common], help=help, description=help[0].upper() + help[1:] + ".")
        if func is not None:
            sub.set_defaults(func=func)
        return sub

    def group(name: str, help: str):
        return command(commands, name, help).add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    def run_file_options(p: argparse.ArgumentParser, writes: bool = True) -> None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. optim.lr=3e-4")
        p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
        if writes:
            p.add_argument("--overwrite", action="store_true", help="replace the output folder even if gramx "
                           "did not make it (default: refuse)")

    def resume_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--resume", nargs="?", const="required", choices=["required", "latest"],
                       help="continue from the newest checkpoint; `--resume latest` starts fresh when there is "
                       "none (the run file's output.resume)")

    def modalities_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--modalities", metavar="A,B", help="load only these modalities of the model (their "
                       "plugins alone need to be installed); default: all")

    def model_options(p: argparse.ArgumentParser, loading: bool = True) -> None:
        p.add_argument("model", metavar="MODEL", help="model directory")
        p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
        if loading:
            modalities_option(p)
            p.add_argument("manifest", metavar="MANIFEST", help="JSONL or CSV manifest")
            p.add_argument("--batch-size", type=_count(), default=64, help="rows per batch (default 64)")
            p.add_argument("--workers", type=_count(0), default=0, help="DataLoader worker processes")
            p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                           help="a bad row: stop (default) or skip it and report it")

    plugins = group("plugins", "installed modality plugins")
    listing = command(plugins, "list", "list plugins, their modalities and status", cmd_plugins_list)
    listing.add_argument("--json", action="store_true", help="print JSON")
    check = command(plugins, "check", "run the conformance kit on a modality", cmd_plugins_check)
    check.add_argument("name", help="modality name")
    check.add_argument("--sample", action="append", help="sample input (repeatable)")

    train = command(commands, "train", "train a model from a run file", cmd_train)
    train.add_argument("config", metavar="RUN.yaml", help="run configuration")
    resume_option(train)
    run_file_options(train)

    extend = group("extend", "grow a trained model: add a modality, or bridge two spaces")
    add = command(extend, "add", "add modalities to a frozen trained model", cmd_extend_add)
    add.add_argument("base", metavar="MODEL", help="trained model directory to extend")
    add.add_argument("config", metavar="RUN.yaml", help="run file naming the existing and the new modalities")
    resume_option(add)
    run_file_options(add)
    bridge = command(extend, "bridge", "bridge a leaf space into a base space", cmd_extend_bridge)
    bridge.add_argument("config", metavar="BRIDGE.yaml", help="bridge configuration")
    run_file_options(bridge)

    export = command(commands, "export", "write a self-contained copy of a model directory (for sharing)",
                     cmd_export)
    export.add_argument("model", metavar="MODEL", help="model directory")
    export.add_argument("-o", "--output", required=True, type=Path, help="the copy to write: frozen pretrained "
                        "folders the model references are copied into it")
    export.add_argument("--overwrite", action="store_true", help="replace the output even if it is not a model "
                        "directory, or holds files gramx did not write there (default: refuse)")
    modalities_option(export)

    config = group("config", "run configuration: reference, schema and resolved view")
    command(config, "reference", "print every key of run and bridge files (Markdown)", cmd_config_reference)
    command(config, "schema", "print the JSON schema of run files", cmd_config_schema)
    show = command(config, "show", "print a run file with defaults filled in and paths resolved", cmd_config_show)
    show.add_argument("config", metavar="RUN.yaml")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    run_file_options(show, writes=False)

    evaluate = command(commands, "eval", "retrieval and zero-shot metrics on a manifest", cmd_eval)
    model_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the evaluation report as JSON")
    evaluate.add_argument("--classes", metavar="FILE", help="class names for zero-shot, line i = label i")
    evaluate.add_argument("--template", default="{}", help='zero-shot prompt, e.g. "a photo of {}"')

    embed = command(commands, "embed", "embed a manifest into an index folder (.npy + safetensors)", cmd_embed)
    model_options(embed)
    embed.add_argument("-o", "--output", required=True, type=Path, help="index folder to write")
    embed.add_argument("--overwrite", action="store_true", help="replace the output even if it is not an index, "
                       "or holds files gramx did not write there")

    shards = command(commands, "shards", "write a manifest's rows into tar shards for streamed training",
                     cmd_shards)
    shards.add_argument("manifest", metavar="MANIFEST", help="JSONL or CSV manifest")
    shards.add_argument("-o", "--output", required=True, type=Path, help="shard folder to write")
    shards.add_argument("--shard-size", type=_count(), default=1000, help="rows per shard (default 1000)")
    shards.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="a row whose file cannot be read: stop (default) or leave it out and report it")
    shards.add_argument("--overwrite", action="store_true", help="replace the output even if it is not a shard folder")
    shards.add_argument("--allow-outside", action="store_true", help="copy files from outside the manifest's folder "
                        "too (refused by default: shards are made to be shared)")

    search = command(commands, "search", "search an embedding index with a text or file query", cmd_search)
    model_options(search, loading=False)
    search.add_argument("--index", required=True, help="folder written by gramx embed with the same model")
    search.add_argument("--query", help="query text")
    search.add_argument("--query-file", help="query file (give its modality with --query-modality)")
    search.add_argument("--query-modality", help="modality of the query (default: text for --query)")
    search.add_argument("--modality", help="candidate modality, or several comma-separated for tuples "
                        "(default: every indexed modality except the query's)")
    search.add_argument("-k", type=_count(), default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON")
    get_host().add_commands(commands, parents=[common])  # commands contributed by plugins (e.g. `gramx demo`)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gramx`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        if isinstance(exc, KeyboardInterrupt):
            print("gramx: interrupted", file=sys.stderr)
            return 130
        known = isinstance(exc, GramxError | FileNotFoundError)
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        print(f"gramx: error: {' '.join(message.split())}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        else:
            print("hint: run with --debug for the full traceback", file=sys.stderr)
        return 1
