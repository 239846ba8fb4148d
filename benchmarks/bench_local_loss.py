"""The local loss's memory per process against the global loss, as the global batch grows.

With the global loss every process computes the whole ``[B, B]`` logit matrix of the
gathered batch (B = the global batch); with the local loss (``loss.local: true``,
open_clip's ``--local-loss --gather-with-grad``) a process computes only its ``B / W`` rows
against the batch, ``2 x [B/W, B]``. One forward + backward of ``GramLoss`` (anchor text +
3 other modalities, D=512, fp32) is measured in a fresh process per case (peak memory
method in ``_common.py``), as rank 0 of W processes would run it: the gathered batch is
built in the process, the local rows are the first ``B / W``. Target: the local loss's
memory grows linearly with B at fixed W (the global one quadratically).

    python benchmarks/bench_local_loss.py                 # B = 1024, 2048, 4096; W = 8
    python benchmarks/bench_local_loss.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_loss import make_batch  # noqa: E402

from gramx.losses.contrastive import GramLoss  # noqa: E402

SCRIPT = Path(__file__).resolve()


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1024,2048,4096", help="global batch sizes")
    p.add_argument("--world", type=int, default=8, help="processes W (the local rows are B / W)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="B = 256, 512, 1024")
    p.add_argument("--probe", choices=("global", "local"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="write the raw results here")
    args = p.parse_args(argv)
    if args.quick:
        args.batches = "256,512,1024"
    args.batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    return args


def step(loss_fn, base: dict, local: torch.Tensor | None) -> torch.Tensor:
    feats = {n: x.detach().requires_grad_() for n, x in base.items()}
    loss = loss_fn(feats, local=local)
    loss.backward()
    return loss.detach()


def probe(args) -> None:
    """Fresh-process probe: peak memory of one step of the global or the local loss at ``--batch``."""
    device = torch.device("cpu")
    base = make_batch(args.batch, args.k, args.d, torch.float32, device)
    local = None
    if args.probe == "local":
        local = torch.zeros(args.batch, dtype=torch.bool)
        local[: args.batch // args.world] = True
    loss_fn = GramLoss(anchor="text", temperature=0.07)
    step(loss_fn, base, local)  # lazy initialisation
    loss_fn.zero_grad(set_to_none=True)
    print(json.dumps(C.peak_memory(lambda: step(loss_fn, base, local), device)))


def run(args) -> dict:
    rows = []
    for batch in args.batches:
        common = ["--batch", str(batch), "--world", str(args.world), "--d", str(args.d), "--k", str(args.k),
                  "--threads", str(args.threads)]
        rows.append({"batch": batch, **{kind: C.run_probe(SCRIPT, ["--probe", kind, *common])["bytes"]
                                        for kind in ("global", "local")}})
    return {"machine": C.machine(torch.device("cpu")), "world": args.world, "rows": rows, "quick": args.quick}


def markdown(res: dict) -> str:
    lines = [f"`python benchmarks/bench_local_loss.py{' --quick' if res['quick'] else ''}` — one forward + backward "
             f"of `GramLoss` (anchor + 3 modalities, D=512, fp32) as rank 0 of W={res['world']} processes; peak "
             "memory per process, fresh process per case.", "",
             f"Machine: {C.machine_markdown(res['machine'])}.", "",
             "| global batch B | global loss | local loss | local / global |", "|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['batch']:,} | {C.fmt_bytes(r['global'])} | {C.fmt_bytes(r['local'])} "
                     f"| {r['local'] / r['global']:.2f} |")
    first, last = res["rows"][0], res["rows"][-1]
    scale = last["batch"] / first["batch"]
    lines += ["", f"- B x{scale:g}: global loss memory x{last['global'] / first['global']:.1f}, local loss "
              f"x{last['local'] / first['local']:.1f} (linear would be x{scale:g}): "
              f"{C.verdict(last['local'] / first['local'] <= 1.5 * scale)}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(C.main(parse, probe, run, markdown))
