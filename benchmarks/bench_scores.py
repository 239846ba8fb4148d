"""Retrieval by each joint score (volume, triangle area, multilinear product) against its matrix-product lower bound.

Every score reduces to matrix products against precomputed candidate terms: the area of
(q, b_j, c_j) needs ``q b^T`` and ``q c^T`` (two products), the multilinear product needs
``q (b * c)^T`` (one), the volume of (q, b_j, c_j) one product per basis vector (two). The
lower bound of each is those plain products, timed side by side in one run (interleaved).
Targets: area and multilinear-product scoring and top-k search within 1.2x of their lower bound; top-k search
memory independent of the number of candidates (two sizes, fresh processes, see _common.py).

    python benchmarks/bench_scores.py            # 1,000 queries x 20,000 pairs, d=512, fp32
    python benchmarks/bench_scores.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_retrieval import make_data  # noqa: E402

from gramx.scores.similarity import SCORES  # noqa: E402

SCRIPT = Path(__file__).resolve()
#: score -> the lower bound: the plain products it cannot do without, given its index
BOUNDS = {
    "area": lambda q, c, index: [q @ c[:, 0].T, q @ c[:, 1].T],
    "mip": lambda q, c, index: [q @ index.vectors.T],
    "volume": lambda q, c, index: [q @ c[:, 0].T, q @ c[:, 1].T],
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.retrieval_arguments(p, reps=10)
    p.add_argument("--memory-nc", default="100000,200000", help="candidate counts for the memory probes ('' = none)")
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--probe", choices=sorted(BOUNDS), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="write the raw results here")
    args = p.parse_args(argv)
    if args.quick:
        args.nq, args.nc, args.reps = 200, 4000, 5
    args.memory_nc = [int(n) for n in args.memory_nc.split(",") if n]
    torch.set_num_threads(args.threads)
    return args


def probe(args) -> None:
    """Fresh-process memory probe: top-k search of one score over ``--nc`` candidates."""
    device = torch.device(args.device)
    q, c = make_data(args.nq, args.nc, 2, args.d, C.DTYPES[args.dtype], device)
    with torch.no_grad():
        index = SCORES[args.probe].index(c)
        del c
        index.search(q, args.k)
        mem = C.peak_memory(lambda: index.search(q, args.k), device)
    print(json.dumps({"nc": args.nc, "search": mem["bytes"], "method": mem["method"]}))


def run(args) -> dict:
    device = torch.device(args.device)
    q, c = make_data(args.nq, args.nc, 2, args.d, C.DTYPES[args.dtype], device)
    results: dict = {"machine": C.machine(device), "args": {k: v for k, v in vars(args).items() if k != "json"},
                     "scores": {}}
    with torch.no_grad():
        indexes = {name: SCORES[name].index(c) for name in BOUNDS}
        fns = {}
        for name, index in indexes.items():
            fns[f"{name}: lower bound"] = lambda name=name, index=index: BOUNDS[name](q, c, index)
            fns[f"{name}: scores"] = lambda index=index: index.scores(q)
            fns[f"{name}: search top-{args.k}"] = lambda index=index: index.search(q, args.k)
        times = C.interleave(fns, args.reps, device)
    for name in BOUNDS:
        bound = times[f"{name}: lower bound"]
        results["scores"][name] = {
            "lower bound": C.median(bound["wall"]),
            "scores": C.median(times[f"{name}: scores"]["wall"]),
            "search": C.median(times[f"{name}: search top-{args.k}"]["wall"]),
            "ratio": C.paired_ratio(times[f"{name}: scores"]["wall"], bound["wall"]),
            "search ratio": C.paired_ratio(times[f"{name}: search top-{args.k}"]["wall"], bound["wall"]),
        }
    results["memory"] = {name: [C.run_probe(SCRIPT, ["--probe", name, "--nc", str(nc), "--nq", str(args.nq),
                                                     "--d", str(args.d), "--k", str(args.k), "--device", args.device,
                                                     "--dtype", args.dtype, "--threads", str(args.threads)])
                                for nc in args.memory_nc] for name in ("area", "mip")}
    return results


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [f"`python benchmarks/bench_scores.py{' --quick' if a['quick'] else ''}` — {a['nq']:,} queries x "
             f"{a['nc']:,} candidate pairs, d={a['d']}, {a['dtype']}, {a['reps']} interleaved repetitions, medians.",
             "", f"Machine: {C.machine_markdown(res['machine'])}.", "",
             "| score | lower bound (its products) | scores `[Nq, Nc]` | ratio | search top-k | ratio |",
             "|---|---|---|---|---|---|"]
    for name, r in res["scores"].items():
        lines.append(f"| {name} | {C.fmt_s(r['lower bound'])} | {C.fmt_s(r['scores'])} | **{r['ratio']:.2f}x** "
                     f"| {C.fmt_s(r['search'])} | {r['search ratio']:.2f}x |")
    lines.append("")
    for name in ("area", "mip"):
        r = res["scores"][name]
        lines.append(f"- {name} scoring within 1.2x of its lower bound: {C.verdict(r['ratio'] <= 1.2)} "
                     f"({r['ratio']:.2f}x); top-{a['k']} search: {C.verdict(r['search ratio'] <= 1.2)} "
                     f"({r['search ratio']:.2f}x).")
    for name, rows in res["memory"].items():
        if len(rows) >= 2:
            grew = rows[-1]["search"] / max(rows[0]["search"], 1)
            sizes = " -> ".join(f"{row['nc']:,}: {C.fmt_bytes(row['search'])}" for row in rows)
            lines.append(f"- {name} top-{a['k']} search memory independent of Nc ({sizes}): "
                         f"{C.verdict(grew < 1.5)}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(C.main(parse, probe, run, markdown))
