"""Training-loss benchmark: ``GramLoss`` against anchored ``PairwiseInfoNCE``, forward + backward.

Both losses get the same batch: B tuples of an anchor (``text``) and 3 other modalities,
each ``[B, D]`` L2-normalised. ``GramLoss`` scores every anchor against every tuple with
the 4-vector Gram volume; ``PairwiseInfoNCE`` scores the anchor against each other modality
separately (3 similarity matrices). Target: ``GramLoss`` takes <= 1.5x the time of
``PairwiseInfoNCE``. The other objectives of the loss table are timed beside them:
``TriangleLoss`` and ``ConFuLoss`` on the anchor and the first two others (they take three
modalities), ``SymileLoss`` (O(N) negatives), ``PMRLLoss`` and ``GatedSymileLoss`` on all k. Peak memory of one forward + backward is measured for each in a fresh
process (method in ``_common.py``).

    python benchmarks/bench_loss.py                 # B=512, k=4, D=512, fp32
    python benchmarks/bench_loss.py --quick
    python benchmarks/bench_loss.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from gramx.losses.confu import ConFuLoss  # noqa: E402
from gramx.losses.contrastive import GramLoss, PairwiseInfoNCE, SymileLoss, TriangleLoss  # noqa: E402
from gramx.losses.gated_symile import GatedSymileLoss  # noqa: E402
from gramx.losses.pmrl import PMRLLoss  # noqa: E402

SCRIPT = Path(__file__).resolve()
LOSSES = ("gram", "pairwise", "triangle", "symile", "pmrl", "confu", "gated_symile")
MODALITIES = ("text", "video", "audio", "subtitles", "depth", "image", "imu", "pointcloud")


def make_batch(b: int, k: int, d: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: F.normalize(torch.randn(b, d, generator=gen), dim=-1).to(device=device, dtype=dtype) for n in MODALITIES[:k]}


class FirstThree(torch.nn.Module):
    """A loss for exactly three modalities, given the first three of the batch."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, feats: dict) -> torch.Tensor:
        return self.loss({name: feats[name] for name in list(feats)[:3]})


def make_losses(device: torch.device, k: int, d: int, chosen: list[str] | None = None) -> dict[str, torch.nn.Module]:
    """The losses timed, by display name; ``chosen``: their loss-table names (default: all)."""
    names = MODALITIES[:k]
    builders = {
        "gram": ("GramLoss", lambda: GramLoss(anchor="text", temperature=0.07, label_smoothing=0.1)),
        "pairwise": ("PairwiseInfoNCE", lambda: PairwiseInfoNCE(anchor="text", temperature=0.07)),
        "triangle": ("TriangleLoss (3 modalities)", lambda: FirstThree(TriangleLoss(anchor="text", temperature=0.07))),
        "symile": ("SymileLoss", lambda: SymileLoss(temperature=0.07)),
        "pmrl": ("PMRLLoss", lambda: PMRLLoss(temperature=0.07)),
        "confu": ("ConFuLoss (3 modalities)", lambda: FirstThree(ConFuLoss(names[:3], d, temperature=0.07))),
        "gated_symile": ("GatedSymileLoss", lambda: GatedSymileLoss(names, d)),
    }
    return {label: build().to(device) for key, (label, build) in builders.items() if chosen is None or key in chosen}


def step(loss_fn: torch.nn.Module, base: dict) -> torch.Tensor:
    """One forward + backward with fresh leaf tensors (gradients to features and temperature); features in a
    reduced precision run under autocast, as in training (a loss's own layers, ConFu's fusion, keep float32 weights)."""
    feats = {n: x.detach().requires_grad_() for n, x in base.items()}
    first = next(iter(feats.values()))
    with torch.autocast(first.device.type, dtype=first.dtype, enabled=first.dtype != torch.float32):
        loss = loss_fn(feats)
    loss.backward()
    return loss.detach()


def probe(args) -> None:
    """Fresh-process memory probe: one warm-up step of each loss, then one measured step each."""
    device, dtype = torch.device(args.device), C.DTYPES[args.dtype]
    base = make_batch(args.batch, args.k, args.d, dtype, device)
    losses = make_losses(device, args.k, args.d, args.losses)
    for loss_fn in losses.values():
        step(loss_fn, base)  # kernels, lazy initialisation
        loss_fn.zero_grad(set_to_none=True)
    out = {}
    for name, loss_fn in losses.items():
        out[name] = C.peak_memory(lambda: step(loss_fn, base), device)
        loss_fn.zero_grad(set_to_none=True)
    print(json.dumps(out))


def run(args) -> dict:
    device, dtype = torch.device(args.device), C.DTYPES[args.dtype]
    info = C.machine(device)
    base = make_batch(args.batch, args.k, args.d, dtype, device)
    losses = make_losses(device, args.k, args.d, args.losses)
    fns = {name: (lambda fn=fn: step(fn, base)) for name, fn in losses.items()}
    times = C.interleave(fns, args.reps, device, warmup=2)
    result = {
        "config": vars(args),
        "machine": info | {"load_average_end": list(C.os.getloadavg())},
        "times": {n: {"wall": C.median(t["wall"]), "cpu": C.median(t["cpu"])} for n, t in times.items()},
        "ratio_wall": C.paired_ratio(times["GramLoss"]["wall"], times["PairwiseInfoNCE"]["wall"]),
        "ratio_cpu": C.paired_ratio(times["GramLoss"]["cpu"], times["PairwiseInfoNCE"]["cpu"]),
        "memory": {},
    }
    if not args.no_memory:
        extra = ["--probe", "--batch", str(args.batch), "--k", str(args.k), "--d", str(args.d)]
        extra += ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads), "--losses",
                  *args.losses]
        result["memory"] = C.run_probe(SCRIPT, extra)
    return result


def markdown(res: dict) -> str:
    cfg = res["config"]
    cmd = "python benchmarks/bench_loss.py" + (" --quick" if cfg.get("quick") else "")
    if cfg["device"] != "cpu" or cfg["dtype"] != "float32":
        cmd += f" --device {cfg['device']} --dtype {cfg['dtype']}"
    if cfg["threads"] != 1:
        cmd += f" --threads {cfg['threads']}"
    mem = res["memory"]
    out = [
        f"`{cmd}` — B={cfg['batch']}, k={cfg['k']} modalities (anchor `text` + {cfg['k'] - 1} others), "
        f"D={cfg['d']}, {cfg['dtype']}, forward + backward, {cfg['reps']} interleaved repetitions, medians.",
        "",
        f"Machine: {C.machine_markdown(res['machine'])}, at end {[round(x, 2) for x in res['machine']['load_average_end']]}.",
        "",
        "| loss | median wall | median CPU | peak memory of one step |",
        "|---|---|---|---|",
    ]
    for name, t in res["times"].items():
        peak = C.fmt_bytes(mem[name]["bytes"]) if name in mem else "—"
        out.append(f"| {name} | {C.fmt_s(t['wall'])} | {C.fmt_s(t['cpu'])} | {peak} |")
    ok = res["ratio_wall"] <= 1.5
    out += [
        "",
        f"- `GramLoss` / `PairwiseInfoNCE`: **{res['ratio_wall']:.2f}x** (wall; CPU {res['ratio_cpu']:.2f}x). "
        f"Target <= 1.5x: {C.verdict(ok)}.",
    ]
    if cfg["device"].startswith("cuda"):
        out.append(f"- GPU target <= 1.3x: {C.verdict(res['ratio_wall'] <= 1.3)}.")
    if mem:
        method = next(iter(mem.values()))["method"]
        out.append(f"- Peak memory: {method}; both losses in one fresh process, each after a warm-up step.")
    return "\n".join(out)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(C.DTYPES))
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--k", type=int, default=4, help="modalities per tuple, the anchor included")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: see BENCHMARKS.md)")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES,
                   help="the losses to time, by loss-table name (gram and pairwise always)")
    p.add_argument("--quick", action="store_true", help="B=128, 10 repetitions")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probes")
    p.add_argument("--json", type=Path)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.losses = ["gram", "pairwise", *(name for name in args.losses if name not in ("gram", "pairwise"))]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.quick and not args.probe:
        for key, value in {"batch": 128, "reps": 10}.items():  # options given explicitly win
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    return args


if __name__ == "__main__":
    sys.exit(C.main(parse, probe, run, markdown))
