"""Retrieval benchmark: ``gramx.volume_matrix`` / ``VolumeIndex`` against two yardsticks.

(a) the naive form the official GRAM code uses: all pairwise dot products stacked into
    ``[Nq, Nc, m+1, m+1]`` Gram matrices, then a batched ``torch.linalg.det``. It is timed
    on the first ``--naive-slice`` candidates and scaled linearly to ``Nc`` (its cost is the
    same for every (query, candidate) pair);
(b) the lower bound: the m plain similarity products ``q @ c[:, i].T``, ``[Nq, Nc]`` each,
    which any volume computation has to match in arithmetic.

Targets: ``volume_matrix`` >= 100x faster than (a) and within 1.5x of (b). Peak memory of
``VolumeIndex.search`` (top-k) is measured for two collection sizes in fresh processes (see
``_common.py`` for the method) next to the full ``[Nq, Nc]`` matrix followed by ``topk``.

    python benchmarks/bench_retrieval.py                  # 1,000 x 20,000, m=3, d=512, fp32
    python benchmarks/bench_retrieval.py --quick          # small sizes, a few seconds
    python benchmarks/bench_retrieval.py --device cuda --dtype bfloat16 --naive-slice 5000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import gramx  # noqa: E402
from gramx.scores.volume import VolumeIndex  # noqa: E402
from gramx.scores.volume_kernel import fused_available  # noqa: E402

SCRIPT = Path(__file__).resolve()


def make_data(nq: int, nc: int, m: int, d: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    gen = torch.Generator(device).manual_seed(seed)  # drawn where they are used: 1M tuples are 6 GB
    q = F.normalize(torch.randn(nq, d, generator=gen, device=device), dim=-1)
    c = F.normalize(torch.randn(nc, m, d, generator=gen, device=device), dim=-1)
    return q.to(dtype), c.to(dtype)


def naive_gram_det(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Official-GRAM-style volumes: every Gram entry as an ``[Nq, Nc]`` matrix, stacked, det."""
    nq, nc, m = q.shape[0], c.shape[0], c.shape[1]
    vectors = [q] + [c[:, i] for i in range(m)]
    entries = []
    for a in range(m + 1):
        for b in range(m + 1):
            if a == 0 and b == 0:
                e = (q * q).sum(-1)[:, None].expand(nq, nc)
            elif a == 0 or b == 0:
                e = vectors[a] @ vectors[b].T if a == 0 else (vectors[b] @ vectors[a].T)
            else:
                e = (vectors[a] * vectors[b]).sum(-1)[None, :].expand(nq, nc)
            entries.append(e)
    gram = torch.stack(entries, dim=-1).reshape(nq, nc, m + 1, m + 1)
    return torch.linalg.det(gram.float()).abs().sqrt()


def lower_bound(q: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
    return [q @ c[:, i].T for i in range(c.shape[1])]


@contextlib.contextmanager
def pytorch_path():
    """Score with the plain PyTorch projection form even where the fused kernel applies."""
    saved = os.environ.get("GRAMX_FUSED_VOLUME")
    os.environ["GRAMX_FUSED_VOLUME"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["GRAMX_FUSED_VOLUME"]
        else:
            os.environ["GRAMX_FUSED_VOLUME"] = saved


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius norms), in float64; NaN anywhere gives inf."""
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return (torch.linalg.norm(out - ref) / torch.linalg.norm(ref)).item()


def recall_at_k(found: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over queries of the share of ``reference``'s top-k indices that ``found`` also holds."""
    hits = (found[:, :, None] == reference[:, None, :]).any(dim=1).float()
    return hits.mean().item()


# ------------------------------------------------------------------------------ probes


def probe(args) -> None:
    """Fresh-process memory probe for one Nc: top-k search, then the full matrix + topk."""
    device, dtype = torch.device(args.device), C.DTYPES[args.dtype]
    q, c = make_data(args.nq, args.nc, args.m, args.d, dtype, device)
    out = {"nc": args.nc}
    with torch.no_grad():
        index = VolumeIndex.build(c)
        del c
        index.search(q, args.k)  # load (and on CUDA autotune) the kernels before measuring
        mem = C.peak_memory(lambda: index.search(q, args.k), device)
        out["search"], out["method"] = mem["bytes"], mem["method"]
        mem = C.peak_memory(lambda: index.volumes(q).topk(args.k, dim=1, largest=False), device)
        out["matrix"] = mem["bytes"]
    out["index_bytes"] = sum(t.numel() * t.element_size() for t in (index.basis, index.volume))
    print(json.dumps(out))


def memory_runs(args) -> list[dict]:
    rows = []
    for nc in args.memory_nc:
        extra = ["--probe", "--nc", str(nc), "--nq", str(args.nq), "--m", str(args.m), "--d", str(args.d)]
        extra += ["--k", str(args.k), "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
        rows.append(C.run_probe(SCRIPT, extra))
    return rows


# ----------------------------------------------------------------------------- timing


def _unfused(fn, *args):
    with pytorch_path():
        return fn(*args)


def run(args) -> dict:
    device, dtype = torch.device(args.device), C.DTYPES[args.dtype]
    info = C.machine(device)
    q, c = make_data(args.nq, args.nc, args.m, args.d, dtype, device)
    s = min(args.naive_slice, args.nc)
    c_slice = c[:s]
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    # half inputs: the index scores in that dtype (opt-in); volume_matrix keeps float32 inside
    score_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else None
    fused = fused_available(device, score_dtype or torch.float32)
    with torch.no_grad():
        index = VolumeIndex.build(c, score_dtype=score_dtype)
        # the timed scoring and the naive form against float64
        ref = naive_gram_det(q.double(), c_slice.double())
        slice_volumes = VolumeIndex.build(c_slice, score_dtype=score_dtype).volumes(q)
        diff_fast = (slice_volumes.double() - ref).abs().max().item()
        rel_fast = relative_error(slice_volumes, ref)
        diff_naive = (naive_gram_det(q, c_slice).double() - ref).abs().max().item()
        fns = {
            "lower bound": lambda: lower_bound(q, c),
            "volume_matrix": lambda: gramx.volume_matrix(q, c),
            "VolumeIndex.build": lambda: VolumeIndex.build(c, score_dtype=score_dtype),
            "VolumeIndex.volumes": lambda: index.volumes(q),
            f"VolumeIndex.search top-{args.k}": lambda: index.search(q, args.k),
            "naive det (slice)": lambda: naive_gram_det(q, c_slice),
        }
        if fused:  # the same query through the PyTorch path, for the kernel's gain
            fns["VolumeIndex.volumes, PyTorch path"] = lambda: _unfused(index.volumes, q)
        times = C.interleave(fns, args.reps, device)
        recall = None
        if score_dtype is not None or args.tf32:  # top-k against strict float32 scoring
            found = index.search(q, args.k)[1]
            torch.backends.cuda.matmul.allow_tf32 = False
            strict = VolumeIndex(index.basis, index.volume)  # the same basis, scored in float32
            recall = recall_at_k(found, strict.search(q.float(), args.k)[1])
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
    del index
    scale = args.nc / s
    lb = times["lower bound"]
    rows = []
    for name, t in times.items():
        naive = name == "naive det (slice)"
        k = scale if naive else 1.0
        rows.append(
            {
                "name": f"naive det, {s} candidates x {scale:g}" if naive else name,
                "wall": C.median(t["wall"]) * k,
                "cpu": C.median(t["cpu"]) * k,
                "vs_lb_wall": C.paired_ratio(t["wall"], lb["wall"], k),
                "vs_lb_cpu": C.paired_ratio(t["cpu"], lb["cpu"], k),
            }
        )
    vm = times["volume_matrix"]
    nv = times["naive det (slice)"]
    summary = {
        "speedup_vs_naive_wall": C.paired_ratio(nv["wall"], vm["wall"], scale),
        "speedup_vs_naive_cpu": C.paired_ratio(nv["cpu"], vm["cpu"], scale),
        "vm_vs_lb_wall": C.paired_ratio(vm["wall"], lb["wall"]),
        "vm_vs_lb_cpu": C.paired_ratio(vm["cpu"], lb["cpu"]),
        "query_vs_lb_wall": C.paired_ratio(times["VolumeIndex.volumes"]["wall"], lb["wall"]),
        "query_vs_lb_cpu": C.paired_ratio(times["VolumeIndex.volumes"]["cpu"], lb["cpu"]),
        "max_abs_diff_scoring": diff_fast,
        "relative_error_scoring": rel_fast,
        "max_abs_diff_naive": diff_naive,
        "fused_kernel": fused,
        "recall_at_k_vs_fp32": recall,
    }
    if fused:
        summary["fused_vs_pytorch_wall"] = C.paired_ratio(
            times["VolumeIndex.volumes"]["wall"], times["VolumeIndex.volumes, PyTorch path"]["wall"])
    info["load_average_end"] = list(C.os.getloadavg())
    result = {"config": vars(args) | {"naive_slice": s}, "machine": info, "rows": rows, "summary": summary}
    if args.memory_nc:
        result["memory"] = memory_runs(args)
    return result


def markdown(res: dict) -> str:
    cfg, sm = res["config"], res["summary"]
    cmd = "python benchmarks/bench_retrieval.py" + (" --quick" if cfg.get("quick") else "")
    if cfg["device"] != "cpu" or cfg["dtype"] != "float32":
        cmd += f" --device {cfg['device']} --dtype {cfg['dtype']}"
    if cfg.get("tf32"):
        cmd += " --tf32"
    if cfg["nc"] != 20000 and not cfg.get("quick"):
        cmd += f" --nc {cfg['nc']} --naive-slice {cfg['naive_slice']}"
    if cfg["threads"] != 1:
        cmd += f" --threads {cfg['threads']}"
    out = [
        f"`{cmd}` — {cfg['nq']:,} queries x {cfg['nc']:,} candidate tuples, m={cfg['m']}, d={cfg['d']}, "
        f"{precision_name(cfg)}, inference (`torch.no_grad`), {cfg['reps']} interleaved repetitions, medians"
        + ("; on CUDA `VolumeIndex` scores with the fused Triton kernel." if sm.get("fused_kernel") else "."),
        "",
        f"Machine: {C.machine_markdown(res['machine'])}, at end {[round(x, 2) for x in res['machine']['load_average_end']]}.",
        "",
        "| method | median wall | median CPU | wall / lower bound | CPU / lower bound |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        out.append(f"| {r['name']} | {C.fmt_s(r['wall'])} | {C.fmt_s(r['cpu'])} | {r['vs_lb_wall']:.2f} | {r['vs_lb_cpu']:.2f} |")
    ok_naive = sm["speedup_vs_naive_wall"] >= 100
    ok_lb = sm["vm_vs_lb_wall"] <= 1.5
    gpu = cfg["device"].startswith("cuda")
    out += [
        "",
        f"- The naive row is timed on the first {cfg['naive_slice']:,} candidates and multiplied by "
        f"{cfg['nc'] / cfg['naive_slice']:g} (linear in Nc).",
        f"- `volume_matrix` vs naive det: **{sm['speedup_vs_naive_wall']:.0f}x** faster (wall; CPU "
        f"{sm['speedup_vs_naive_cpu']:.0f}x). Target >= 100x: {C.verdict(ok_naive)}.",
        f"- `volume_matrix` (index build + query) vs lower bound: **{sm['vm_vs_lb_wall']:.2f}x** (wall; CPU "
        f"{sm['vm_vs_lb_cpu']:.2f}x). Target <= 1.5x: {C.verdict(ok_lb)}. Query on a prebuilt "
        f"`VolumeIndex` alone: {sm['query_vs_lb_wall']:.2f}x.",
        f"- Accuracy on the slice against the float64 det: `VolumeIndex` scoring max abs error "
        f"{sm['max_abs_diff_scoring']:.1e} (relative {sm['relative_error_scoring']:.1e}); naive det in "
        f"{cfg['dtype']}: {sm['max_abs_diff_naive']:.1e}.",
    ]
    if cfg["dtype"] in ("bfloat16", "float16"):
        out.append(f"- The `VolumeIndex` rows score in {cfg['dtype']} (`score_dtype`); `volume_matrix` computes in "
                   "float32 from the same inputs, as its contract says.")
    if gpu:
        out.append(f"- GPU target, query on a prebuilt index within 1.3x of the lower bound of the same precision: "
                   f"**{sm['query_vs_lb_wall']:.2f}x**, {C.verdict(sm['query_vs_lb_wall'] <= 1.3)}.")
    if sm.get("fused_vs_pytorch_wall") is not None:
        out.append(f"- Fused kernel vs the PyTorch projection form on the same index: "
                   f"{sm['fused_vs_pytorch_wall']:.2f}x the time.")
    if sm.get("recall_at_k_vs_fp32") is not None:
        out.append(f"- Recall@{cfg['k']} of the {precision_name(cfg)} top-{cfg['k']} against strict float32: "
                   f"{sm['recall_at_k_vs_fp32']:.4f}.")
    if res.get("memory"):
        mem = res["memory"]
        out += [
            "",
            f"Peak memory added by one query batch ({cfg['nq']:,} queries, top-{cfg['k']}), one fresh process per Nc, "
            f"measured as {mem[0]['method']} (see `benchmarks/_common.py`); the index itself (orthonormal bases) "
            "is held before the call and listed apart:",
            "",
            f"| Nc | index size | `VolumeIndex.search` top-{cfg['k']} | full `[Nq, Nc]` matrix + topk |",
            "|---|---|---|---|",
        ]
        for row in mem:
            out.append(
                f"| {row['nc']:,} | {C.fmt_bytes(row['index_bytes'])} | {C.fmt_bytes(row['search'])} | {C.fmt_bytes(row['matrix'])} |"
            )
        flat = mem[-1]["search"] <= 1.25 * mem[0]["search"] + (8 << 20)
        out.append("")
        out.append(
            f"- Search memory independent of Nc ({mem[0]['nc']:,} -> {mem[-1]['nc']:,} candidates): "
            f"{C.verdict(flat)}; the full matrix grows with Nq x Nc."
        )
    return "\n".join(out)


def precision_name(cfg: dict) -> str:
    """``float32`` (IEEE), ``float32 with TF32 products`` or the input dtype."""
    if cfg["dtype"] == "float32":
        return "float32 with TF32 products" if cfg.get("tf32") else "float32 (IEEE products)"
    return f"{cfg['dtype']} inputs"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.retrieval_arguments(p, reps=4)
    p.add_argument("--m", type=int, default=3)
    p.add_argument("--naive-slice", type=int, default=1000, help="candidates the naive det is timed on")
    p.add_argument("--tf32", action="store_true", help="allow TF32 products for float32 on CUDA (both sides)")
    p.add_argument("--memory-nc", type=lambda s: [int(x) for x in s.split(",") if x], default=[20000, 80000])
    p.add_argument("--quick", action="store_true", help="small sizes: 200 x 4,000; memory at 28,000 and 56,000")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.quick and not args.probe:
        # memory: Nc spanning 2 and 4 blocks of 200 queries, so that both reach the steady state
        quick = {"nq": 200, "nc": 4000, "reps": 3, "naive_slice": 200, "memory_nc": [28000, 56000]}
        for key, value in quick.items():  # options given explicitly win
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    return args


if __name__ == "__main__":
    sys.exit(C.main(parse, probe, run, markdown))
