"""Collections at scale: `gramx embed` in bounded memory, and search over indexes larger than memory.

    python benchmarks/bench_index.py                      # about 40 minutes on 2 busy cores, 40 GB of disk
    python benchmarks/bench_index.py --quick              # small sizes, to check that it runs
    python benchmarks/bench_index.py --work /big/disk     # where the indexes are written (default: a temp dir)
    python benchmarks/bench_index.py --device cuda --parts search recall --rows 1000000   # the GPU check's run

1. **Embedding.** ``gramx embed`` of the digits model (examples/digits.yaml, freshly
   initialised: audio CNN, image CNN, frozen MiniLM) over manifests of N and 10 N tuples
   (the test split repeated under new ids): wall time, tuples/s and the peak resident set of
   each process (``wait4``); the 10 N manifest also under ``torchrun`` with 2 processes of 1
   thread each against 1 process of 2 threads.
2. **Writing.** Synthetic indexes of random unit vectors (audio + image, d=512, float32)
   written through :class:`gramx.index.IndexWriter` in batches of 65,536 rows, each row with
   an id and a 30-character path per modality: rows/s, bytes on disk per tuple.
3. **Searching**, each index in a fresh process: ``EmbeddingIndex.load`` time; 100 and 1,000
   queries ranked by the model's Gram volume over (audio, image) and by cosine over audio
   alone, against the GEMM bound of the same products (``q @ c_i^T`` for every row and
   candidate modality, on a block of rows held in memory, run as many times as the index
   has blocks), side by side; peak memory the search adds to the process (``VmHWM`` after a
   reset, the page cache not counted: vectors are read with ``pread``, not mapped). With the
   index in page cache (read once before) and cold (its pages dropped with
   ``posix_fadvise(DONTNEED)``), beside the disk's sequential read time of the same files.
4. **Storage dtype.** Top-10 recall of float16 and bfloat16 indexes against float32 on real
   embeddings: the official GRAM MSR-VTT test set (884 texts against (video, audio,
   subtitles) tuples, and text against video alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from gramx.embed.embedding import Embeddings  # noqa: E402
from gramx.index import EmbeddingIndex, IndexWriter  # noqa: E402
from gramx.model.model import load_model  # noqa: E402
from gramx.train.config import build_model, load_config  # noqa: E402

RUN_FILE = C.ROOT / "examples" / "digits.yaml"
TEST_MANIFEST = C.ROOT / "examples" / "data" / "digits" / "test.jsonl"
MSRVTT = C.ROOT / "benchmarks" / "data" / "msrvtt-gram"
WRITE_BATCH = 1 << 16
GEMM_BLOCK = 1 << 17
PARTS = ["recall", "embedding", "search"]


# ------------------------------------------------------------------------------ embedding


def repeated_manifest(out: Path, times: int) -> Path:
    """The digits test manifest repeated ``times`` times under new ids, its paths made absolute."""
    rows = [json.loads(line) for line in TEST_MANIFEST.read_text().splitlines() if line.strip()]
    path = out / f"digits-x{times}.jsonl"
    with path.open("w") as f:
        for copy in range(times):
            for row in rows:
                made = {k: str(TEST_MANIFEST.parent / v) if k in ("audio", "image") else v for k, v in row.items()}
                f.write(json.dumps({**made, "id": f"{row['id']}-{copy}"}) + "\n")
    return path


def embed_run(model: Path, manifest: Path, out: Path, processes: int, threads: int, device: str) -> dict:
    """``gramx embed`` in a subprocess: wall seconds, tuples/s and the largest process's peak RSS."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    cmd = [sys.executable, *launcher, "-m", "gramx", "embed", str(model), str(manifest), "-o", str(out),
           "--overwrite", "--device", device, "--batch-size", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output.decode()[-3000:]}")
    rows = len(EmbeddingIndex.load(out))
    return {"rows": rows, "processes": processes, "threads": threads, "wall": wall, "rate": rows / wall,
            "peak_rss": usage.ru_maxrss * 1024}


def embedding(work: Path, quick: bool, device: str) -> list[dict]:
    run = load_config(RUN_FILE)
    model = work / "digits-model"
    build_model(run).save_pretrained(model)
    small, large = (1, 3) if quick else (1, 10)
    results = []
    for times in (small, large):
        manifest = repeated_manifest(work, times)
        results.append(embed_run(model, manifest, work / f"embedded-x{times}", 1, 2, device) | {"times": times})
    manifest = repeated_manifest(work, large)
    results.append(embed_run(model, manifest, work / "embedded-torchrun", 2, 1, device) | {"times": large})
    return results


# -------------------------------------------------------------------------------- writing


def search_model(work: Path) -> Path:
    """A saved audio + image model of dimension 512 scored by the Gram volume (its weights are never used)."""
    folder = work / "model-512"
    if not folder.exists():
        run_file = work / "audio-image.yaml"
        run_file.write_text(json.dumps({"modalities": {"audio": {}, "image": {}}, "dim": 512, "loss": {"type": "gram", "anchor": "all"},
                                        "data": {"train": str(TEST_MANIFEST)}}))
        build_model(load_config(run_file)).save_pretrained(folder)
    return folder


def synthetic_batch(start: int, rows: int, dim: int, generator: torch.Generator) -> Embeddings:
    ids = [f"clip-{start + i:09d}" for i in range(rows)]
    feats = {n: torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)
             for n in ("audio", "image")}
    return Embeddings(ids=ids, labels=[None] * rows, lines=list(range(start + 1, start + rows + 1)), feats=feats,
                      masks={n: torch.ones(rows, dtype=torch.bool) for n in feats},
                      values={"audio": [f"audio/{i}.flac" for i in ids], "image": [f"image/{i}.jpg" for i in ids]})


def write_index(work: Path, rows: int) -> dict:
    folder = work / f"index-{rows}"
    model = load_model(search_model(work))
    generator = torch.Generator().manual_seed(rows)
    started = time.perf_counter()
    with IndexWriter(folder, model, overwrite=True, modalities=["audio", "image"]) as writer:
        for start in range(0, rows, WRITE_BATCH):
            writer.add(synthetic_batch(start, min(WRITE_BATCH, rows - start), model.dim, generator))
    wall = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"rows": rows, "folder": str(folder), "wall": wall, "rate": rows / wall, "bytes": size}


# ------------------------------------------------------------------------------ searching


def index_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def drop_cache(folder: Path) -> None:
    for path in index_files(folder):
        with path.open("rb") as f:
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def read_all(folder: Path) -> float:
    """Seconds to read every file of ``folder`` sequentially (1 MiB reads)."""
    started = time.perf_counter()
    buffer = bytearray(1 << 20)
    for path in index_files(folder):
        with path.open("rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    return time.perf_counter() - started


def gemm_bound(index: EmbeddingIndex, queries: torch.Tensor, names: list[str]) -> None:
    """The products a search must compute, ``q @ c_i^T`` for every row and name, on a block held in memory."""
    block = [index.segments[0].read(n, 0, min(GEMM_BLOCK, len(index)))[0].to(queries.device) for n in names]
    for start in range(0, len(index), GEMM_BLOCK):
        rows = min(GEMM_BLOCK, len(index) - start)
        for vectors in block:
            queries @ vectors[:rows].T


def probe(args) -> None:
    """One index in this fresh process: open time, searches against the GEMM bound, peak memory, cold cache."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    folder = Path(args.probe)
    started = time.perf_counter()
    index = EmbeddingIndex.load(folder)
    opened = time.perf_counter() - started
    result = {"rows": len(index), "open": opened, "searches": []}
    generator = torch.Generator().manual_seed(0)
    for nq in args.queries:
        queries = torch.nn.functional.normalize(torch.randn(nq, index.record.model.dim, generator=generator), dim=-1)
        queries = queries.to(device)
        for names in (["audio", "image"], ["audio"]):
            read_all(folder)  # into page cache
            fns = {"search": lambda: index.top(queries, names, 10), "GEMM bound": lambda: gemm_bound(index, queries, names)}
            timed = C.interleave(fns, args.reps, device, warmup=0)
            memory = C.peak_memory(lambda: index.top(queries, names, 10), device)
            drop_cache(folder)
            started = time.perf_counter()
            index.top(queries, names, 10)
            C.synchronize(device)
            cold = time.perf_counter() - started
            drop_cache(folder)
            disk = read_all(folder)
            result["searches"].append({
                "queries": nq, "names": names, "score": "cosine" if len(names) == 1 else index.score,
                "search": C.median(timed["search"]["wall"]), "gemm": C.median(timed["GEMM bound"]["wall"]),
                "ratio": C.paired_ratio(timed["search"]["wall"], timed["GEMM bound"]["wall"]),
                "cold": cold, "disk": disk, "memory": memory["bytes"]})
    print(json.dumps(result))


def searching(work: Path, rows: int, args) -> tuple[dict, dict]:
    """Write a synthetic index of ``rows`` tuples, probe it in a fresh process, delete it (disk and page cache)."""
    written = write_index(work, rows)
    probed = C.run_probe(Path(__file__), ["--probe", written["folder"], "--device", args.device, "--threads",
                                          str(args.threads), "--reps", str(args.reps), "--queries",
                                          *map(str, args.queries)], timeout=7200)
    shutil.rmtree(written["folder"])
    return written, probed


# ---------------------------------------------------------------------------- storage dtype


def recall(work: Path) -> list[dict]:
    """Top-10 recall of half-precision indexes against float32, on the official GRAM MSR-VTT embeddings."""
    with np.load(MSRVTT / "step99.npz") as saved:
        feats = {n: torch.from_numpy(saved[n]).float() for n in ("text", "video", "audio")}
    model = load_model(search_model(work))
    indexes = {}
    for dtype in ("float32", "float16", "bfloat16"):
        folder = work / f"msrvtt-{dtype}"
        rows = len(feats["text"])
        batch = Embeddings(ids=[str(i) for i in range(rows)], labels=[None] * rows, lines=list(range(rows)),
                           feats={"audio": feats["video"], "image": feats["audio"]},
                           masks={"audio": torch.ones(rows, dtype=torch.bool), "image": torch.ones(rows, dtype=torch.bool)},
                           values={"audio": [None] * rows, "image": [None] * rows})
        with IndexWriter(folder, model, overwrite=True, dtype=dtype, modalities=["audio", "image"]) as writer:
            writer.add(batch)
        indexes[dtype] = EmbeddingIndex.load(folder)
    results = []
    for names in (["audio", "image"], ["audio"]):
        _, _, exact = indexes["float32"].top(feats["text"], names, 10)
        for dtype in ("float16", "bfloat16"):
            _, _, found = indexes[dtype].top(feats["text"], names, 10)
            hits = sum(len(set(a) & set(b)) for a, b in zip(exact.tolist(), found.tolist()))
            results.append({"dtype": dtype, "names": names, "recall": hits / exact.numel()})
    return results


# ------------------------------------------------------------------------------- markdown


def markdown(res: dict) -> str:
    lines = [f"`python benchmarks/bench_index.py {res.get('command', '')}` — {res['threads']} torch thread(s) for "
             "searching.", "", C.machine_markdown(res["machine"]), ""]
    if "embedding" in res:
        lines += embedding_markdown(res["embedding"])
    if "searching" in res:
        lines += searching_markdown(res)
    if "recall" in res:
        lines += recall_markdown(res["recall"])
    return "\n".join(lines)


def embedding_markdown(embedded: list[dict]) -> list[str]:
    lines = ["**Embedding** (`gramx embed`, digits model, batch 64):", "",
              "| tuples | processes x threads | wall | tuples/s | peak RSS per process |", "|---|---|---|---|---|"]
    for e in embedded:
        lines.append(f"| {e['rows']:,} | {e['processes']} x {e['threads']} | {e['wall']:.1f} s | {e['rate']:.0f} | "
                     f"{C.fmt_bytes(e['peak_rss'])} |")
    return lines + [""]


def searching_markdown(res: dict) -> list[str]:
    lines = ["**Writing** (`IndexWriter`, audio + image, d=512, float32, batches of 65,536):", "",
              "| tuples | wall | tuples/s | on disk | per tuple |", "|---|---|---|---|---|"]
    for w in res["writing"]:
        lines.append(f"| {w['rows']:,} | {w['wall']:.1f} s | {w['rate']:,.0f} | {C.fmt_bytes(w['bytes'])} | "
                     f"{w['bytes'] / w['rows']:,.0f} B |")
    lines += ["", "**Searching** (top-10; search and GEMM bound interleaved, medians; memory: peak the search adds; "
              "cold: pages dropped first, beside reading the same files from disk):", "",
              "| tuples | open | queries | candidates (score) | search, page cache | GEMM bound | ratio | cold | "
              "disk read | peak memory |", "|---|---|---|---|---|---|---|---|---|---|"]
    for probe_result in res["searching"]:
        for s in probe_result["searches"]:
            lines.append(f"| {probe_result['rows']:,} | {probe_result['open'] * 1000:.0f} ms | {s['queries']:,} | "
                         f"{', '.join(s['names'])} ({s['score']}) | {C.fmt_s(s['search'])} | {C.fmt_s(s['gemm'])} | "
                         f"**{s['ratio']:.2f}x** | {C.fmt_s(s['cold'])} | {C.fmt_s(s['disk'])} | "
                         f"{C.fmt_bytes(s['memory'])} |")
    return lines + [""]


def recall_markdown(recalled: list[dict]) -> list[str]:
    lines = ["**Storage dtype** (top-10 recall against a float32 index; MSR-VTT official GRAM embeddings, "
              "884 texts as queries):", "", "| dtype | candidates | recall@10 |", "|---|---|---|"]
    for r in recalled:
        what = "(video, audio): 3-vector volume" if len(r["names"]) == 2 else "video: cosine"
        lines.append(f"| {r['dtype']} | {what} | {r['recall']:.4f} |")
    return lines


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, to check that it runs")
    p.add_argument("--rows", type=int, nargs="+", default=None, help="synthetic index sizes (default 1M and 4M)")
    p.add_argument("--queries", type=int, nargs="+", default=None, help="query batch sizes (default 100 and 1000)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for searching")
    p.add_argument("--device", default="cpu", help="where the queries are scored (the index is read on the CPU)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="what to measure (default: all)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--work", type=Path, default=None, help="where to write (default: a temporary folder, removed)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.rows = args.rows or ([20_000, 70_000] if args.quick else [1_000_000, 4_000_000])
    args.queries = args.queries or ([10, 100] if args.quick else [100, 1000])
    args.reps = args.reps or 2
    return args


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gramx-bench-index-", dir=args.work))
    try:
        res = {"command": " ".join(sys.argv[1:]), "threads": args.threads,
               "machine": C.machine(torch.device(args.device))}
        if "recall" in args.parts:
            res["recall"] = recall(work)
        if "embedding" in args.parts:
            res["embedding"] = embedding(work, args.quick, args.device)
        if "search" in args.parts:
            res["writing"], res["searching"] = zip(*(searching(work, rows, args) for rows in args.rows))
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(C.main(parse, probe, run, markdown))
