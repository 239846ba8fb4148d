"""Serving: latency per query of ``gramx serve`` over HTTP, on the demo's index and on a synthetic 1M-tuple index.

    python benchmarks/bench_serve.py --demo demo-report        # the index `make demo` wrote (default)
    python benchmarks/bench_serve.py --rows 1000000 --work /tmp  # also a synthetic index of that many tuples
    python benchmarks/bench_serve.py --quick                     # a quick demo run and 20,000 rows

Each index is served by ``gramx serve`` in its own process (uvicorn on a free port, the
CPU); one client sends the queries one after another (a warm-up query first) and times
each request from sending to the parsed JSON: text queries ranked by cosine over one
modality and by the model's score over tuples, and uploaded files (a photo, a recording).
Median and 90th percentile in milliseconds. The synthetic index is written as
``bench_index.py`` writes its own (random unit vectors, audio + image, d=512, float32,
about 4 KB a tuple) by a model that also has a text tower, and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_index import TEST_MANIFEST, WRITE_BATCH, synthetic_batch  # noqa: E402

from gramx.index import IndexWriter  # noqa: E402
from gramx.model.model import load_model  # noqa: E402
from gramx.train.config import build_model, load_config  # noqa: E402

DIGITS = C.ROOT / "examples" / "data" / "digits"
PHOTO, RECORDING = DIGITS / "image" / "0_img_5266.jpg", DIGITS / "audio" / "0_nicolas_24.flac"
TEXTS = ["seven", "the digit two", "a hand signs nine", "the number five", "zero"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``gramx serve ARGS`` on a free port of localhost, until the block ends."""

    def __init__(self, args: list[str]):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "gramx", "serve", *args, "--port", str(self.port),
                                      "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gramx serve stopped: {self.proc.stdout.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gramx serve did not start within 300 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def timed(client: httpx.Client, send, repeats: int) -> dict:
    """Median and p90 in ms of ``repeats`` requests ``send(client)``, after one warm-up."""
    warm = send(client)
    if warm.status_code != 200:
        raise RuntimeError(f"{warm.request.url}: {warm.status_code} {warm.text}")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = send(client)
        response.raise_for_status()
        response.json()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "queries": repeats}


def latencies(server: Server, repeats: int, uploads: bool) -> dict:
    """The kinds of query, each timed; text queries cycle through :data:`TEXTS`."""
    texts = iter(TEXTS * (repeats + 1))

    def text(modality: str):
        return lambda c: c.get("/api/search", params={"q": next(texts), "modality": modality, "k": 10})

    def upload(path: Path, query: str, modality: str):
        return lambda c: c.post("/api/search", files={"file": (path.name, path.read_bytes())},
                                data={"query_modality": query, "modality": modality, "k": "10"})

    kinds = {"text -> audio (cosine)": text("audio"), "text -> (audio, image) (model's score)": text("audio,image")}
    if uploads:
        kinds["photo -> audio (cosine)"] = upload(PHOTO, "image", "audio")
        kinds["recording -> (image, text) (model's score)"] = upload(RECORDING, "audio", "image,text")
    with httpx.Client(base_url=server.url, timeout=600) as client:
        rows = client.get("/api/info").json()["index"]["rows"]
        return {"rows": rows, "kinds": {name: timed(client, send, repeats) for name, send in kinds.items()}}


def demo_serve_args(report: Path, quick: bool) -> list[str]:
    """The arguments of the command that serves a demo report's index (running ``gramx demo`` when none is there)."""
    if not (report / "results.json").is_file():
        cmd = [sys.executable, "-m", "gramx", "demo", "--stage", "digits", "--no-progress", "-o", str(report)]
        subprocess.run(cmd + (["--quick"] if quick else []), check=True)
    command = json.loads((report / "results.json").read_text())["digits"]["serve"]
    return shlex.split(command)[2:]


def synthetic_index(work: Path, rows: int) -> tuple[Path, Path]:
    """A model (audio, image, text; d=512; Gram volume) and an index of ``rows`` random audio + image tuples."""
    run_file = work / "audio-image-text.yaml"
    run_file.write_text(json.dumps({"modalities": {"audio": {}, "image": {}, "text": {"options": {"freeze": True}}},
                                    "dim": 512, "loss": {"type": "gram", "anchor": "all"},
                                    "data": {"train": str(TEST_MANIFEST)}}))
    build_model(load_config(run_file)).save_pretrained(work / "model")
    model = load_model(work / "model")
    generator = torch.Generator().manual_seed(rows)
    with IndexWriter(work / "index", model, modalities=["audio", "image"]) as writer:
        for start in range(0, rows, WRITE_BATCH):
            writer.add(synthetic_batch(start, min(WRITE_BATCH, rows - start), model.dim, generator))
    return work / "model", work / "index"


def markdown(results: list[tuple[str, dict]]) -> str:
    lines = ["| index | rows | query | median ms | p90 ms | queries |", "|---|---:|---|---:|---:|---:|"]
    for name, res in results:
        for kind, t in res["kinds"].items():
            lines.append(f"| {name} | {res['rows']:,} | {kind} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} "
                         f"| {t['queries']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, default=C.ROOT / "demo-report", help="a gramx demo report folder")
    p.add_argument("--rows", type=int, default=0, help="also a synthetic index of this many tuples (0: none)")
    p.add_argument("--work", type=Path, default=None, help="where the synthetic index is written (default: temp)")
    p.add_argument("--repeats", type=int, default=50, help="queries of each kind on the demo index")
    p.add_argument("--large-repeats", type=int, default=10, help="queries of each kind on the synthetic index")
    p.add_argument("--quick", action="store_true", help="a quick demo, 20,000 synthetic rows, few queries")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.large_repeats = args.rows or 20_000, 5, 3
    results = []
    with Server(demo_serve_args(args.demo, args.quick)) as server:
        results.append(("demo (digits test split)", latencies(server, args.repeats, uploads=True)))
    print(markdown(results), flush=True)
    if args.rows:
        work = Path(tempfile.mkdtemp(prefix="gramx-bench-serve-", dir=args.work))
        try:
            model, index = synthetic_index(work, args.rows)
            with Server([str(model), "--index", str(index)]) as server:
                results.append(("synthetic (random, d=512, float32)", latencies(server, args.large_repeats,
                                                                                uploads=False)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{C.machine_markdown(C.machine(torch.device('cpu')))}\n\n{markdown(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
