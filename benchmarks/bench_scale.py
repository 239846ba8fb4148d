"""Scale on the digits data: training with 1 and 2 processes, and loading from shards against the manifest.

    python benchmarks/bench_scale.py               # CPU (gloo); about 3 minutes on 2 busy cores
    python benchmarks/bench_scale.py --quick       # a few steps of each, to check that it runs

1. **Processes.** ``gramx train examples/digits.yaml`` for one epoch (46 steps of 32 tuples;
   validation and checkpoints off): one process with 1 and with 2 torch threads, and
   ``torchrun --standalone --nproc-per-node 2`` with 1 thread each. Steady-state tuples/s is
   the median of the trainer's own windows of 5 steps after the first; wall time includes
   start-up (MiniLM, preloading).
2. **Loading.** One epoch of the training loader alone (no model, the digits run's options,
   no preloading): from the manifest (loose files) and from shards of 100 rows written by
   ``gramx shards``, with 0 and 2 DataLoader workers; rows/s.
3. **Profile.** Where a training step's time goes, per batch of 32 in one process: each
   modality's ``load`` (decoding + features; from shards also the tar read and the
   temporary file), collation, and each encoder's forward + backward (the frozen text
   encoder: forward only; training caches its features, from the manifest or from the
   captions the shards hold, so a step does not pay it).
4. **Training from shards.** The same epoch as (1) with one process, preloading off on both
   sides (shards are streamed, never preloaded), from the manifest and from shards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from gramx.train.config import load_config  # noqa: E402
from gramx.data.loading import Collator  # noqa: E402
from gramx.data.manifest import read_manifest  # noqa: E402
from gramx.runtime.distributed import DistContext  # noqa: E402
from gramx.train.config import build_model  # noqa: E402
from gramx.data.shard_reader import read_shards  # noqa: E402
from gramx.data.shards import write_shards  # noqa: E402
from gramx.train.training_data import open_training_data, read_training_rows  # noqa: E402

RUN_FILE = C.ROOT / "examples" / "digits.yaml"
MANIFEST = C.ROOT / "examples" / "data" / "digits" / "train.jsonl"
NO_PRELOAD = ["modalities.audio.preload=false", "modalities.image.preload=false"]


def train_rate(out: Path, name: str, overrides: list[str], processes: int = 1, threads: int = 1) -> dict:
    """Train the digits run in a subprocess; its steady-state tuples/s and wall seconds."""
    run_dir = out / name
    args = ["train", str(RUN_FILE), "--set", f"output.dir={run_dir}", "--set", "data.val=null", "--set",
            "output.checkpoint_every=null", "--set", "logging.every=5", "--set", "logging.progress=false",
            "--set", "logging.tensorboard=false", "--set", "device=cpu", "--overwrite"]
    for item in overrides:
        args += ["--set", item]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *launcher, "-m", "gramx", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-3000:])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r]
    return {"tuples_per_s": statistics.median(rates[1:] or rates), "wall_s": wall, "windows": len(rates)}


def loader_rate(train: Path, workers: int, epochs_steps: int | None) -> float:
    """Rows per second of one epoch of the training loader (no model)."""
    config = load_config(RUN_FILE, [f"data.train={train}", f"data.workers={workers}", "data.val=null", *NO_PRELOAD,
                                    "modalities.text.cache=false", "device=cpu"])
    torch.manual_seed(0)
    data, _ = open_training_data(read_training_rows(config.data.train), build_model(config), config,
                                 DistContext())
    data.plan(1)
    started, rows = time.perf_counter(), 0
    for i, batch in enumerate(data.loader(0, 0)):
        rows += int(batch["index"].numel())
        if epochs_steps is not None and i + 1 >= epochs_steps:
            break
    return rows / (time.perf_counter() - started)


def profile(shards: Path, batches: int) -> dict:
    """Seconds per batch of 32: each modality's load (manifest, shards), collation, each encoder's step."""
    config = load_config(RUN_FILE, ["device=cpu", *NO_PRELOAD])
    torch.manual_seed(0)
    model = build_model(config).train()
    mods = {n: (model.modalities[n], model.modality_configs[n]) for n in model.names}
    manifest = read_manifest(MANIFEST)
    timing: dict[str, list[float]] = {}

    def timed(key: str, fn, *args):
        started = time.perf_counter()
        value = fn(*args)
        timing.setdefault(key, []).append(time.perf_counter() - started)
        return value

    shard_set = read_shards(shards)
    shard_rows = list(shard_set.read(0))
    for b in range(batches):
        rows = manifest.rows[32 * b:32 * (b + 1)]
        samples = {n: [timed(f"load {n} (manifest)", m.load, m.resolve_value(r.values[n], manifest.root), cfg)
                       for r in rows] for n, (m, cfg) in mods.items()}
        timed("read a shard of 100 rows (tar), per 32", lambda: list(shard_set.read(b % len(shard_set.files))))
        timing["read a shard of 100 rows (tar), per 32"][-1] *= 32 / 100
        with tempfile.TemporaryDirectory() as tmp:
            for row in shard_rows[:32]:
                for name, (suffix, payload) in row.files.items():
                    path = Path(tmp) / f"{row.record.index:09d}.{name}{suffix}"
                    timed(f"load {name} (shards: temporary file + load)",
                          lambda p=path, d=payload, n=name: (p.write_bytes(d), mods[n][0].load(str(p), mods[n][1])))
        batch = timed("collate", Collator(mods), [{"index": 0, "values": {n: s[i] for n, s in samples.items()},
                                                   "error": None} for i in range(len(rows))])
        for name in model.names:
            if model.frozen(name):
                with torch.no_grad():
                    timed(f"encoder {name} (frozen: forward)", model.embed, name, batch["inputs"][name])
            else:
                timed(f"encoder {name} (forward + backward)",
                      lambda n=name: model.embed(n, batch["inputs"][n]).sum().backward())
    return {key: sum(values) / batches for key, values in timing.items()}


def run(args) -> dict:
    info = C.machine(torch.device("cpu"))
    epoch = ["optim.epochs=1"] if not args.quick else ["optim.max_steps=10"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        shards = out / "shards"
        write_shards(MANIFEST, shards, 100, progress=False)
        res = {"machine": info, "processes": {}, "loading": {}, "shards_training": {}}
        res["processes"]["1 process, 1 thread"] = train_rate(out, "p1t1", epoch)
        res["processes"]["1 process, 2 threads"] = train_rate(out, "p1t2", epoch, threads=2)
        res["processes"]["2 processes (gloo), 1 thread each"] = train_rate(out, "p2", epoch, processes=2)
        steps = 10 if args.quick else None
        for workers in (0, 2):
            res["loading"][f"manifest, {workers} workers"] = loader_rate(MANIFEST, workers, steps)
            res["loading"][f"shards, {workers} workers"] = loader_rate(shards, workers, steps)
        res["profile"] = profile(shards, 2 if args.quick else 6)
        res["shards_training"]["1 process, manifest, preload off"] = train_rate(out, "m", epoch + NO_PRELOAD)
        res["shards_training"]["1 process, shards (streamed)"] = train_rate(
            out, "s", epoch + NO_PRELOAD + [f"data.train={shards}"])
    return res


def markdown(res: dict) -> str:
    lines = [
        "`python benchmarks/bench_scale.py` — examples/digits.yaml (audio + image + frozen MiniLM text), "
        "one epoch of 46 steps of 32 tuples, CPU, gloo.",
        "",
        f"Machine: {C.machine_markdown(res['machine'])}.",
        "",
        "| training | tuples/s (steady) | whole run |",
        "|---|---|---|",
        *[f"| {k} | {v['tuples_per_s']:.0f} | {v['wall_s']:.1f} s |" for k, v in res["processes"].items()],
        *[f"| {k} | {v['tuples_per_s']:.0f} | {v['wall_s']:.1f} s |" for k, v in res["shards_training"].items()],
        "",
        "| loader alone (no model) | rows/s |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in res["loading"].items()],
        "",
        "| one step of 32 tuples, one process, 1 thread | ms per batch |",
        "|---|---|",
        *[f"| {k} | {1000 * v:.1f} |" for k, v in sorted(res["profile"].items(), key=lambda kv: -kv[1])],
    ]
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few steps of each part")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(C.main(parse, None, run, markdown))
