"""End-to-end training throughput of the digits example (audio + image + text), in tuples/s.

Trains ``examples/digits.yaml`` for a few epochs through ``gramx.train.loop`` (the real loader,
encoders, loss and optimizer; validation off) and reads the trainer's own per-window rate
from ``metrics.jsonl``. The first window (start-up, first batches) is left out of the
steady-state median. The same command on two machines compares them:

    python benchmarks/bench_train_throughput.py                          # CPU, torch's threads
    python benchmarks/bench_train_throughput.py --device cuda --amp bf16
    python benchmarks/bench_train_throughput.py --set modalities.text.options.model=DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from gramx.train.config import load_config  # noqa: E402
from gramx.train.loop import train  # noqa: E402

RUN_FILE = C.ROOT / "examples" / "digits.yaml"


def run(args) -> dict:
    info = C.machine(torch.device(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"device={args.device}", f"optim.amp={args.amp}", f"optim.epochs={args.epochs}", "data.val=null",
            f"output.dir={tmp}/run", "output.checkpoint_every=null", "logging.every=5",
            "logging.progress=false", "logging.tensorboard=false", *args.set,
        ]
        config = load_config(RUN_FILE, overrides)
        started = time.perf_counter()
        train(config)
        wall = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r]
    steady = rates[1:] or rates
    steps = max(r["step"] for r in records if "step" in r)
    return {
        "config": vars(args) | {"steps": steps, "batch_size": config.data.batch_size},
        "machine": info,
        "tuples_per_s": statistics.median(steady),
        "windows": rates,
        "wall_s": wall,
    }


def markdown(res: dict) -> str:
    cfg = res["config"]
    extra = "".join(f" --set {s}" for s in cfg["set"])
    return "\n".join([
        f"`python benchmarks/bench_train_throughput.py --device {cfg['device']} --amp {cfg['amp']} "
        f"--epochs {cfg['epochs']}{extra}` — examples/digits.yaml, {cfg['steps']} steps of "
        f"{cfg['batch_size']} tuples, validation off.",
        "",
        f"Machine: {C.machine_markdown(res['machine'])}.",
        "",
        f"- Steady-state training throughput: **{res['tuples_per_s']:.0f} tuples/s** (median of "
        f"{max(1, len(res['windows']) - 1)} windows of 5 steps); whole run {res['wall_s']:.1f} s "
        "including model set-up and preloading the audio and images.",
    ])


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run-file override")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(C.main(parse, None, run, markdown))
