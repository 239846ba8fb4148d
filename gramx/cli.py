"""The ``gramx`` command.

Each sub-command is a function ``cmd_<name>(args)``; :func:`build_parser` wires them up.
Errors are printed as one line plus a hint; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gramx.errors import GramxError

__all__ = ["main", "build_parser"]


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_plugins_list(args: argparse.Namespace) -> int:
    """List installed plugins, their modalities and their status."""
    from gramx.plugins import get_host

    host = get_host()
    records = sorted(host.records.values(), key=lambda r: r.name)
    if args.json:
        print(json.dumps([
            {"plugin": r.name, "modalities": r.modalities, "version": r.version,
             "distribution": r.distribution, "status": r.status, "error": r.error}
            for r in records
        ], indent=2))
        return 0
    rows = [
        [r.name, ", ".join(r.modalities) or "-", r.version or "-", r.distribution or "-", r.status, r.error or ""]
        for r in records
    ]
    _print_table(rows, ["plugin", "modalities", "version", "distribution", "status", "error"])
    return 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    """Run the conformance kit against an installed modality."""
    from gramx.plugins import get_modality
    from gramx.testing import check_modality

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
    from gramx.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model as a run file describes."""
    import logging

    from gramx.train import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = _load_run_config(args)
    path = train(config, resume=args.resume)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"model written to {path}")
    return 0


def cmd_extend_add(args: argparse.Namespace) -> int:
    """Add the run file's new modalities to a trained model, keeping its space frozen."""
    import logging

    from gramx.extend import add_modalities

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = add_modalities(args.base, _load_run_config(args), resume=args.resume)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"model written to {path}")
    return 0


def cmd_extend_bridge(args: argparse.Namespace) -> int:
    """Bridge a leaf space into a base space through a shared modality, without paired data."""
    from gramx.extend import bridge_spaces, load_bridge_config

    overrides = list(args.set or []) + ([f"device={args.device}"] if args.device else [])
    path = bridge_spaces(load_bridge_config(args.config, overrides))
    print(f"model written to {path}")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema of a run file."""
    from gramx.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the resolved configuration (defaults filled in, paths absolute)."""
    import yaml

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
        for kind in ("retrieval", "nway")
        for key, metrics in report[kind].items()
    ]
    if rows:
        print()
        _print_table(rows, ["kind", "query->candidates", *_METRIC_KEYS])
    if report["zeroshot"]:
        print()
        _print_table([[name, f"{acc:.2f}"] for name, acc in report["zeroshot"].items()],
                     ["zero-shot", "accuracy %"])


def _model(args: argparse.Namespace):
    from gramx.model import load_model

    return load_model(args.model, device=args.device or "auto")


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval (pairwise + n-way) and zero-shot metrics of a model on a manifest."""
    from gramx.data import ErrorLog
    from gramx.evaluate import report_from_embeddings

    model = _model(args)
    errors = ErrorLog()
    emb = model.embed_manifest(args.manifest, batch_size=args.batch_size, workers=args.workers,
                               on_error=args.on_error, error_log=errors, progress=not args.json)
    report = report_from_embeddings(emb, model=model, classes=args.classes, template=args.template)
    if errors.count:
        print(f"gramx: {errors.summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed every row of a manifest: per-modality .npy + safetensors files and index.json."""
    import numpy as np
    from safetensors.numpy import save_file

    from gramx.data import ErrorLog
    from gramx.model import atomic_directory

    model = _model(args)
    errors = ErrorLog()
    emb = model.embed_manifest(args.manifest, batch_size=args.batch_size, workers=args.workers,
                               on_error=args.on_error, error_log=errors, progress=True)
    index = {
        "format": "gramx-embeddings", "format_version": 1, "model": str(Path(args.model).resolve()),
        "manifest": str(Path(args.manifest).resolve()), "dim": model.dim, "tuples": len(emb),
        "ids": emb.ids, "labels": emb.labels, "modalities": {},
    }
    with atomic_directory(args.output) as tmp:
        for name in emb.feats:
            rows = emb.masks[name].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            vectors = emb.feats[name][rows].numpy().astype(np.float32)
            ids = [emb.ids[i] for i in rows.tolist()]
            np.save(tmp / f"{name}.npy", vectors)
            save_file({"embeddings": vectors, "rows": rows.numpy().astype(np.int64)},
                      str(tmp / f"{name}.safetensors"), metadata={"ids": json.dumps(ids), "modality": name})
            index["modalities"][name] = {
                "npy": f"{name}.npy", "safetensors": f"{name}.safetensors", "count": len(ids),
                "rows": rows.tolist(), "ids": ids, "values": [emb.values[name][i] for i in rows.tolist()],
            }
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    if errors.count:
        print(f"gramx: {errors.summary()}", file=sys.stderr)
    counts = ", ".join(f"{n} {m['count']}" for n, m in index["modalities"].items())
    print(f"embedded {len(emb)} tuples ({counts}) into {args.output}")
    return 0


def _read_index(folder: Path) -> dict:
    path = folder / "index.json"
    if not path.is_file():
        raise GramxError(f"{folder} is not an embedding index (no index.json)",
                         hint="create one with: gramx embed MODEL MANIFEST -o FOLDER")
    return json.loads(path.read_text(encoding="utf-8"))


def cmd_search(args: argparse.Namespace) -> int:
    """Rank indexed items (one modality: cosine) or tuples (2+ modalities: Gram volume) for a query."""
    import numpy as np
    import torch

    from gramx.volume import VolumeIndex

    if (args.query is None) == (args.query_file is None):
        raise GramxError("give exactly one of --query TEXT or --query-file PATH")
    folder = Path(args.index)
    index = _read_index(folder)
    qmod = args.query_modality or ("text" if args.query is not None else None)
    if qmod is None:
        raise GramxError("--query-file needs --query-modality NAME (the file's modality, e.g. audio)")
    available = list(index["modalities"])
    if args.modality:
        candidates = [m.strip() for m in args.modality.split(",") if m.strip()]
    else:
        candidates = [m for m in available if m != qmod]
    unknown = [m for m in candidates if m not in available]
    if unknown or not candidates:
        raise GramxError(f"the index has no modality {', '.join(unknown) or '(none chosen)'}",
                         hint=f"indexed modalities: {', '.join(available)}")
    model = _model(args)
    value = args.query if args.query is not None else str(Path(args.query_file).resolve())
    query = model.embed_values(qmod, [value])
    vectors, rows_per = {}, {}
    for m in candidates:
        meta = index["modalities"][m]
        vectors[m] = torch.from_numpy(np.load(folder / meta["npy"]))
        rows_per[m] = meta["rows"]
    if len(candidates) == 1:
        m = candidates[0]
        scores = (query @ vectors[m].T)[0]
        top = scores.topk(min(args.k, scores.numel()))
        hits = [(rows_per[m][i], s) for s, i in zip(top.values.tolist(), top.indices.tolist())]
        score_name = "cosine"
    else:
        common = sorted(set.intersection(*(set(rows_per[m]) for m in candidates)))
        if not common:
            raise GramxError(f"no indexed tuple has all of {', '.join(candidates)}")
        pos = {m: {r: i for i, r in enumerate(rows_per[m])} for m in candidates}
        tuples = torch.stack([vectors[m][[pos[m][r] for r in common]] for m in candidates], dim=1)
        values, idx = VolumeIndex.build(tuples).search(query, k=args.k)
        hits = [(common[i], v) for v, i in zip(values[0].tolist(), idx[0].tolist())]
        score_name = "volume"
    results = []
    for rank, (row, score) in enumerate(hits, start=1):
        shown = {m: index["modalities"][m]["values"][index["modalities"][m]["rows"].index(row)]
                 for m in candidates if row in index["modalities"][m]["rows"]}
        results.append({"rank": rank, "id": index["ids"][row], score_name: score, "values": shown})
    if args.json:
        print(json.dumps({"query_modality": qmod, "candidates": candidates, "results": results}, indent=2))
        return 0
    _print_table([[str(r["rank"]), r["id"], f"{r[score_name]:.4f}",
                   "  ".join(str(v) for v in r["values"].values())] for r in results],
                 ["rank", "id", score_name, "values"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gramx`` command."""
    parser = argparse.ArgumentParser(prog="gramx", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    plugins = commands.add_parser("plugins", help="installed modality plugins")
    plugin_commands = plugins.add_subparsers(dest="plugins_command", required=True)
    listing = plugin_commands.add_parser("list", help="list plugins and their status")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_plugins_list)
    check = plugin_commands.add_parser("check", help="run the conformance kit on a modality")
    check.add_argument("name", help="modality name")
    check.add_argument("--sample", action="append", help="sample input (repeatable)")
    check.set_defaults(func=cmd_plugins_check)

    def device_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")

    def loading_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=int, default=64, help="rows per batch (default 64)")
        p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
        p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="a bad row: stop (default) or skip it and report it")

    train = commands.add_parser("train", parents=[debug], help="train a model from a run file")
    train.add_argument("config", metavar="RUN.yaml", help="run configuration")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. optim.lr=3e-4")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    device_option(train)
    train.set_defaults(func=cmd_train)

    extend = commands.add_parser("extend", help="grow a trained model: add a modality, or bridge two spaces")
    extend_commands = extend.add_subparsers(dest="extend_command", required=True)
    add = extend_commands.add_parser("add", parents=[debug], help="add modalities to a frozen trained model")
    add.add_argument("base", metavar="MODEL", help="trained model directory to extend")
    add.add_argument("config", metavar="RUN.yaml", help="run file naming the existing and the new modalities")
    add.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key of the run file")
    add.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    device_option(add)
    add.set_defaults(func=cmd_extend_add)
    bridge = extend_commands.add_parser("bridge", parents=[debug], help="bridge a leaf space into a base space")
    bridge.add_argument("config", metavar="BRIDGE.yaml", help="bridge configuration")
    bridge.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    device_option(bridge)
    bridge.set_defaults(func=cmd_extend_bridge)

    config = commands.add_parser("config", help="run configuration: schema and resolved view")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    schema = config_commands.add_parser("schema", parents=[debug], help="print the JSON schema of run files")
    schema.set_defaults(func=cmd_config_schema)
    show = config_commands.add_parser("show", parents=[debug], help="print a run file with defaults filled in")
    show.add_argument("config", metavar="RUN.yaml")
    show.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(func=cmd_config_show, device=None)

    evaluate = commands.add_parser("eval", parents=[debug], help="retrieval and zero-shot metrics on a manifest")
    evaluate.add_argument("model", metavar="MODEL", help="model directory")
    evaluate.add_argument("manifest", metavar="MANIFEST", help="JSONL or CSV manifest")
    evaluate.add_argument("--json", action="store_true", help="print the evaluation report as JSON")
    evaluate.add_argument("--classes", metavar="FILE", help="class names for zero-shot, line i = label i")
    evaluate.add_argument("--template", default="{}", help='zero-shot prompt, e.g. "a photo of {}"')
    loading_options(evaluate)
    device_option(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    embed = commands.add_parser("embed", parents=[debug], help="embed a manifest into .npy/safetensors files")
    embed.add_argument("model", metavar="MODEL", help="model directory")
    embed.add_argument("manifest", metavar="MANIFEST", help="JSONL or CSV manifest")
    embed.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    loading_options(embed)
    device_option(embed)
    embed.set_defaults(func=cmd_embed)

    search = commands.add_parser("search", parents=[debug], help="search an embedding index")
    search.add_argument("model", metavar="MODEL", help="model directory")
    search.add_argument("--index", required=True, help="folder written by gramx embed")
    search.add_argument("--query", help="query text")
    search.add_argument("--query-file", help="query file (give its modality with --query-modality)")
    search.add_argument("--query-modality", help="modality of the query (default: text for --query)")
    search.add_argument("--modality", help="candidate modality, or several comma-separated for tuples "
                        "(default: every indexed modality except the query's)")
    search.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON")
    device_option(search)
    search.set_defaults(func=cmd_search)
    from gramx.plugins import get_host

    get_host().add_commands(commands)  # commands contributed by plugins (e.g. `gramx demo`)
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
