"""The commands that use a model on data: ``gramx eval``, ``embed`` and ``search`` (also under torchrun)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gramx.cli.options import Commands, count, model_options, modalities
from gramx.cli.output import print_report, print_table
from gramx.data.loading import ErrorLog
from gramx.errors import GramxError
from gramx.evaluate.report import evaluate
from gramx.data.manifest import manifest_path
from gramx.data.shard_reader import ShardSet, read_shards
from gramx.data.shards import is_shards
from gramx.embed.stream import count_rows, embedded_batches
from gramx.index.queries import answer_queries, read_queries
from gramx.index.reader import EmbeddingIndex, Hit
from gramx.index.writer import IndexWriter, finish_parts
from gramx.runtime.distributed import all_gather_object, barrier, processes, share
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


def _source(path: str) -> Path | ShardSet:
    return read_shards(path) if is_shards(path) else manifest_path(path)


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed every row of a manifest or shard folder into an index, in batches (under torchrun: each process a part)."""
    if args.append and args.resume:
        raise GramxError("give one of --append (a new part of an existing index) or --resume (an unfinished one)")
    with processes(args.device or "auto") as ctx:
        model = load_model(args.model, device=ctx.device, modalities=modalities(args))
        source = _source(args.manifest)
        first, stop = share(count_rows(source), ctx)
        options = dict(overwrite=args.overwrite, dtype=args.dtype, append=args.append, resume=args.resume,
                       part=ctx.rank, parts=ctx.world_size, source=source if isinstance(source, Path) else source.path,
                       first=first, stop=stop, modalities=model.names)
        errors = ErrorLog()
        if not ctx.is_main:
            barrier()  # the first process prepares the folder
        with IndexWriter(args.output, model, **options) as writer:
            if ctx.is_main:
                barrier()
            for batch, next_row in embedded_batches(model, source, writer.next_row, stop, args.batch_size,
                                                    args.workers, args.on_error, errors, progress=ctx.is_main):
                writer.add(batch, next_row)
        barrier()
        counts = all_gather_object((writer.rows, errors.count, errors.examples))
        if ctx.distributed and ctx.is_main:
            finish_parts(args.output, model, ctx.world_size, args.dtype, model.names, append=args.append)
        barrier()
    if ctx.is_main:
        skipped = sum(c for _, c, _ in counts)
        if skipped:
            shown = [e for *_, ex in counts for e in ex][:errors.keep]
            print(f"gramx: skipped {skipped} bad rows: {' | '.join(shown)}", file=sys.stderr)
        print(f"embedded {sum(r for r, *_ in counts)} tuples into {args.output}")
    return 0


def _hit(h: Hit, score: str) -> dict:
    return {"rank": h.rank, "id": h.id, score: h.score, "values": h.values}


def _search_many(args: argparse.Namespace, index: EmbeddingIndex, qmod: str, names: list[str] | None) -> int:
    with processes(args.device or "auto") as ctx:
        model = load_model(args.model, device=ctx.device, modalities=[qmod])  # the query's tower only
        queries = read_queries(args.query_file, qmod)
        answers = answer_queries(model, index, queries, qmod, names, args.k, ctx, base=Path(args.query_file).parent)
        out = open(args.output, "w", encoding="utf-8") if args.output and ctx.is_main else sys.stdout
        try:
            for qid, value, score, hits in answers:
                if ctx.is_main:
                    out.write(json.dumps({"id": qid, "query": value, "score": score,
                                          "hits": [_hit(h, score) for h in hits]}) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Rank indexed items (one modality: cosine) or tuples (2+ modalities: the model's score) for queries."""
    if (args.query is None) == (args.query_file is None):
        raise GramxError("give exactly one of --query TEXT or --query-file FILE")
    index = EmbeddingIndex.load(args.index)
    qmod = args.query_modality or ("text" if args.query is not None or _many(args.query_file) else None)
    if qmod is None:
        raise GramxError("--query-file needs --query-modality NAME (the file's modality, e.g. audio)")
    names = [m.strip() for m in args.modality.split(",") if m.strip()] if args.modality else None
    if args.query_file is not None and _many(args.query_file):
        return _search_many(args, index, qmod, names)
    model = load_model(args.model, device=args.device or "auto", modalities=[qmod])  # the query's tower only
    value = args.query if args.query is not None else str(Path(args.query_file).resolve())
    score_name, hits = index.query(model, value, qmod, names, k=args.k)
    if args.json:
        print(json.dumps({"query_modality": qmod, "candidates": index.candidates(qmod, names),
                          "results": [_hit(h, score_name) for h in hits]}, indent=2))
        return 0
    print_table([[str(h.rank), h.id, f"{h.score:.4f}", "  ".join(str(v) for v in h.values.values())] for h in hits],
                ["rank", "id", score_name, "values"])
    return 0


def _many(path: str | None) -> bool:
    """Whether ``--query-file`` names a file of many queries (a manifest or a text file of lines)."""
    return path is not None and Path(path).suffix.lower() in (".txt", ".jsonl", ".json", ".ndjson", ".csv")


def register(commands: Commands) -> None:
    """Add ``eval``, ``embed`` and ``search``."""
    evaluation = commands.add("eval", "retrieval and zero-shot metrics on a manifest", cmd_eval)
    model_options(evaluation)
    evaluation.add_argument("--json", action="store_true", help="print the evaluation report as JSON")
    evaluation.add_argument("--classes", metavar="FILE", help="class names for zero-shot, line i = label i")
    evaluation.add_argument("--template", default="{}", help='zero-shot prompt, e.g. "a photo of {}"')

    embed = commands.add("embed", "embed a manifest or shard folder into an index, in batches", cmd_embed)
    model_options(embed)
    embed.add_argument("-o", "--output", required=True, type=Path, help="index folder to write")
    embed.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                       help="how vectors are stored (default float32; half the disk in 16 bits, see BENCHMARKS.md)")
    embed.add_argument("--resume", action="store_true", help="continue an embedding that was stopped")
    embed.add_argument("--append", action="store_true", help="add the rows to the existing index at --output "
                       "(made by the same model)")
    embed.add_argument("--overwrite", action="store_true", help="replace the output even if it is not an index, "
                       "or holds files gramx did not write there; drops an unfinished embedding")

    search = commands.add("search", "search an embedding index with a query, or a file of many", cmd_search)
    model_options(search, loading=False)
    search.add_argument("--index", required=True, help="folder written by gramx embed with the same model")
    search.add_argument("--query", help="query text")
    search.add_argument("--query-file", help="a query file (give its modality with --query-modality), or many "
                        "queries: a .txt file (one per line) or a manifest (.jsonl/.csv), answered as JSON lines")
    search.add_argument("--query-modality", help="modality of the queries (default: text)")
    search.add_argument("--modality", help="candidate modality, or several comma-separated for tuples "
                        "(default: every indexed modality except the query's)")
    search.add_argument("-k", type=count(), default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON")
    search.add_argument("-o", "--output", help="with many queries: write the JSON lines here (default: stdout)")
