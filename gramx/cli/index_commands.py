"""The commands that use a model on data: ``gramx eval``, ``embed`` and ``search``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gramx.cli.options import Commands, count, model_options, modalities
from gramx.cli.output import print_report, print_table
from gramx.data.loading import ErrorLog
from gramx.embed.embedding import embed_manifest
from gramx.errors import GramxError
from gramx.evaluate.report import evaluate
from gramx.files.atomic import check_output
from gramx.index.store import INDEX, EmbeddingIndex, save_embeddings
from gramx.model.model import GramxModel, load_model

__all__ = ["register"]


def _model(args: argparse.Namespace) -> GramxModel:
    return load_model(args.model, device=args.device or "auto", modalities=modalities(args))


def _report_skipped(errors: ErrorLog) -> None:
    if errors.count:
        print(f"gramx: {errors.summary()}", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    """Retrieval (pairwise + n-way) and zero-shot metrics of a model on a manifest."""
    errors = ErrorLog()
    report = evaluate(_model(args), args.manifest, classes=args.classes, template=args.template,
                      batch_size=args.batch_size, workers=args.workers, on_error=args.on_error, progress=not args.json,
                      error_log=errors)
    _report_skipped(errors)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed every row of a manifest into an index folder."""
    check_output(args.output, INDEX, args.overwrite)  # before the work, not after
    model = _model(args)
    errors = ErrorLog()
    emb = embed_manifest(model, args.manifest, batch_size=args.batch_size, workers=args.workers,
                         on_error=args.on_error, error_log=errors, progress=True)
    index = save_embeddings(emb, args.output, model, args.manifest, overwrite=args.overwrite)
    _report_skipped(errors)
    counts = ", ".join(f"{n} {m['count']}" for n, m in index["modalities"].items())
    print(f"embedded {len(emb)} tuples ({counts}) into {args.output}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Rank indexed items (one modality: cosine) or tuples (2+ modalities: the model's score) for a query."""
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
    print_table([[str(h.rank), h.id, f"{h.score:.4f}", "  ".join(str(v) for v in h.values.values())] for h in hits],
                ["rank", "id", score_name, "values"])
    return 0


def register(commands: Commands) -> None:
    """Add ``eval``, ``embed`` and ``search``."""
    evaluation = commands.add("eval", "retrieval and zero-shot metrics on a manifest", cmd_eval)
    model_options(evaluation)
    evaluation.add_argument("--json", action="store_true", help="print the evaluation report as JSON")
    evaluation.add_argument("--classes", metavar="FILE", help="class names for zero-shot, line i = label i")
    evaluation.add_argument("--template", default="{}", help='zero-shot prompt, e.g. "a photo of {}"')

    embed = commands.add("embed", "embed a manifest into an index folder", cmd_embed)
    model_options(embed)
    embed.add_argument("-o", "--output", required=True, type=Path, help="index folder to write")
    embed.add_argument("--overwrite", action="store_true", help="replace the output even if it is not an index, "
                       "or holds files gramx did not write there")

    search = commands.add("search", "search an embedding index with a text or file query", cmd_search)
    model_options(search, loading=False)
    search.add_argument("--index", required=True, help="folder written by gramx embed with the same model")
    search.add_argument("--query", help="query text")
    search.add_argument("--query-file", help="query file (give its modality with --query-modality)")
    search.add_argument("--query-modality", help="modality of the query (default: text for --query)")
    search.add_argument("--modality", help="candidate modality, or several comma-separated for tuples "
                        "(default: every indexed modality except the query's)")
    search.add_argument("-k", type=count(), default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON")
