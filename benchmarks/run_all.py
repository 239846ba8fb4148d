"""Run every benchmark and print the results as markdown (``--write``: into BENCHMARKS.md).

    python benchmarks/run_all.py                    # CPU, full sizes, about 3 minutes here
    python benchmarks/run_all.py --quick            # small sizes, to check that all runs
    python benchmarks/run_all.py --write            # also update BENCHMARKS.md
    python benchmarks/run_all.py --device cuda --write   # a GPU session adds its own blocks

Each result block in BENCHMARKS.md sits between ``<!-- begin NAME -->`` and
``<!-- end NAME -->`` markers named after the benchmark, device type and dtype (e.g.
``retrieval cpu float32``); ``--write`` replaces only the blocks of this run, so CPU and
GPU results live side by side. Text outside the markers is left alone.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import bench_loss  # noqa: E402
import bench_retrieval  # noqa: E402
import msrvtt_reproduce  # noqa: E402

BENCHMARKS_MD = C.ROOT / "BENCHMARKS.md"
SECTIONS = {
    "machine": "## Machine and method",
    "retrieval": "## Retrieval (volume_matrix)",
    "loss": "## Training loss",
    "msrvtt": "## MSR-VTT reproduction",
}


def msrvtt_block() -> str:
    rows = [row for step in msrvtt_reproduce.STEPS for row in msrvtt_reproduce.evaluate_step(step)]
    problems = msrvtt_reproduce.mismatches(rows, msrvtt_reproduce.expected_rows())
    status = (
        f"all {len(rows)} rows x {len(msrvtt_reproduce.COLUMNS)} numbers equal SOURCE.md at its printed precision: **met**"
        if not problems
        else "**differs** from SOURCE.md: " + "; ".join(problems)
    )
    return "\n".join(
        [
            "`python benchmarks/msrvtt_reproduce.py` (also `make demo`; exits 1 on any difference) — official GRAM "
            "embeddings of the 884 MSR-VTT test items, `gramx.volume_matrix` in float64, metrics from "
            "`gramx.evaluate.report.retrieval_metrics` (ties count against the query); the last column uses the "
            "opposite tie rule, for comparison only.",
            "",
            msrvtt_reproduce.format_table(rows),
            "",
            f"- {status}. `tests/test_msrvtt.py` asserts the same numbers.",
        ]
    )


def headline_two_threads(args) -> str:
    """volume_matrix vs the lower bound with 2 torch threads (the machine's default)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        device, dtype = torch.device(args.device), C.DTYPES[args.dtype]
        nq, nc = (200, 4000) if args.quick else (1000, 20000)
        q, c = bench_retrieval.make_data(nq, nc, 3, 512, dtype, device)
        with torch.no_grad():
            fns = {
                "lower bound": lambda: bench_retrieval.lower_bound(q, c),
                "volume_matrix": lambda: bench_retrieval.gramx.volume_matrix(q, c),
            }
            t = C.interleave(fns, 3, device, warmup=0)  # kernels are loaded by now
        r = C.paired_ratio(t["volume_matrix"]["wall"], t["lower bound"]["wall"])
        rc = C.paired_ratio(t["volume_matrix"]["cpu"], t["lower bound"]["cpu"])
        return (
            f"- Same sizes with 2 torch threads (3 repetitions): lower bound {C.fmt_s(C.median(t['lower bound']['wall']))}, "
            f"`volume_matrix` {C.fmt_s(C.median(t['volume_matrix']['wall']))}: **{r:.2f}x** (wall; CPU {rc:.2f}x)."
        )
    finally:
        torch.set_num_threads(threads)


def update(text: str, section: str, name: str, block: str) -> str:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    wrapped = f"{begin}\n{block}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: wrapped, text)
    if section not in text:
        return text.rstrip("\n") + f"\n\n{section}\n\n{wrapped}\n"
    start = text.index(section) + len(section)
    nxt = text.find("\n## ", start)
    nxt = len(text) if nxt < 0 else nxt
    return text[:nxt].rstrip("\n") + f"\n\n{wrapped}\n" + text[nxt:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(C.DTYPES))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the main tables")
    p.add_argument("--naive-slice", type=int, help="candidates the naive det is timed on (bench_retrieval's default)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_MD.name}")
    args = p.parse_args(argv)
    if args.quick and args.write:
        p.error("--quick results are not recorded; drop --write or --quick")
    common = ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
    common += ["--quick"] if args.quick else []
    tag = f"{torch.device(args.device).type} {args.dtype}"
    start = time.perf_counter()

    blocks = {}
    if torch.device(args.device).type == "cpu":
        lat = C.op_latency()
        blocks["machine"] = (
            f"Machine: {C.machine_markdown(C.machine(torch.device('cpu')))}. One small element-wise product "
            f"([1365, 512] fp32) took {C.fmt_s(lat[1])} with 1 torch thread and {C.fmt_s(lat[2])} with 2 "
            "when this run started (the thread count here is torch's default; each table states its own)."
        )
        print(blocks["machine"] + "\n", flush=True)
    slice_args = ["--naive-slice", str(args.naive_slice)] if args.naive_slice else []
    res = bench_retrieval.run(bench_retrieval.parse(common + slice_args))
    blocks["retrieval"] = bench_retrieval.markdown(res)
    if torch.device(args.device).type == "cpu":
        blocks["retrieval"] += "\n" + headline_two_threads(args)
    print(blocks["retrieval"] + "\n", flush=True)
    blocks["loss"] = bench_loss.markdown(bench_loss.run(bench_loss.parse(common)))
    print(blocks["loss"] + "\n", flush=True)
    blocks["msrvtt"] = msrvtt_block()
    print(blocks["msrvtt"] + "\n", flush=True)
    print(f"(all benchmarks: {time.perf_counter() - start:.0f} s)")

    if args.write:
        text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
        for key, block in blocks.items():
            name = "msrvtt" if key == "msrvtt" else f"{key} {tag}"
            text = update(text, SECTIONS[key], name, block)
        BENCHMARKS_MD.write_text(text)
        print(f"updated {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
