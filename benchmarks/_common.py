"""Shared helpers for the benchmarks: interleaved timing, peak memory, machine description.

Timing: the functions compared are run in turn (A B C A B C ...), each repetition after
one warm-up call each; a ratio is taken repetition by repetition (A_r / B_r) and the median
of those ratios is reported, so a drift of the machine's speed during the run hits both
sides alike. Wall-clock seconds (``time.perf_counter``, CUDA synchronised) are the primary
figure; on CPUs the process CPU seconds (``time.process_time``, all threads) are kept as a
second opinion that a busy machine disturbs less.

Peak memory, CPU: run in a fresh process with a fixed glibc mmap threshold (see
``PROBE_ENV``); free what set-up left behind (``gc``, ``malloc_trim``), reset the kernel's
resident-set high-water mark (``/proc/self/clear_refs``, value 5), call the function once,
and report ``VmHWM - VmRSS(before)``: the most resident memory the call added at any moment. CUDA: ``torch.cuda.max_memory_allocated`` minus the
memory allocated before the call (the caching allocator's live tensors, not its reserve).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


# ------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: torch.device) -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["driver"] = nvidia_driver()
    return info


def nvidia_driver() -> str | None:
    """The NVIDIA driver version that ``nvidia-smi`` reports, if it can be run."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_markdown(info: dict) -> str:
    gpu = f", GPU {info['gpu']} (driver {info.get('driver')}, CUDA {info.get('cuda')})" if "gpu" in info else ""
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), torch {info['torch']}, "
        f"{info['threads']} torch threads, Python {info['python']}, device `{info['device']}`{gpu}; "
        f"load average at start {info['load_average']}"
    )


def op_latency() -> dict[int, float]:
    """Median seconds of one small element-wise product ([1365, 512] fp32) at 1 and 2 threads.

    On an idle machine both are tens of microseconds; when other processes keep the cores
    busy, a 2-thread operation waits for its second thread to be scheduled (milliseconds).
    """
    x = torch.randn(1365, 512)
    threads = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            ts = []
            for _ in range(25):
                t0 = time.perf_counter()
                x * x
                ts.append(time.perf_counter() - t0)
            out[n] = statistics.median(ts[5:])
    finally:
        torch.set_num_threads(threads)
    return out


# -------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(fns: dict[str, Callable[[], object]], reps: int, device: torch.device, warmup: int = 1) -> dict:
    """Run ``fns`` in turn ``reps`` times; return ``{name: {"wall": [...], "cpu": [...]}}``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            synchronize(device)
    times = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            gc.collect()
            synchronize(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            synchronize(device)
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(time.process_time() - c0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float], scale_a: float = 1.0) -> float:
    """Median over repetitions of ``scale_a * a[r] / b[r]``."""
    return statistics.median(scale_a * x / y for x, y in zip(a, b))


def fmt_s(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs"


# -------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn: Callable[[], object], device: torch.device) -> dict:
    """Peak memory (bytes) that one call of ``fn`` adds on top of what is held before it."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return {"bytes": peak, "method": "`torch.cuda.max_memory_allocated` minus memory allocated before"}
    _malloc_trim()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    out = fn()
    peak = _status_kib("VmHWM") - before
    del out
    method = "peak resident set above the one before the call (`VmHWM` after resetting it, minus `VmRSS`)"
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        method += f", glibc `MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}`"
    return {"bytes": peak * 1024, "method": method}


#: glibc's malloc otherwise raises its mmap threshold after the first large free and then
#: serves blocks of up to 32 MB from the heap, where freed ones stay resident: the resident
#: set would then track the allocator's history more than the memory in use. A fixed 1 MiB
#: threshold maps every large tensor on its own and unmaps it when freed.
PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def run_probe(script: Path, args: list[str], timeout: float = 600) -> dict:
    """Run ``script --probe ...`` in a fresh interpreter; it prints one JSON line last."""
    cmd = [sys.executable, str(script), *args]
    env = os.environ | PROBE_ENV
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"probe failed: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def retrieval_arguments(p, reps: int) -> None:
    """The options every retrieval benchmark shares: sizes, repetitions, threads, device and dtype."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--nc", type=int, default=20000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: see BENCHMARKS.md)")


def main(parse: Callable, probe: Callable | None, run: Callable, markdown: Callable, argv=None) -> int:
    """A benchmark script's entry point: ``--probe`` runs one memory probe, otherwise the
    timed run is printed as markdown (and written as JSON with ``--json``)."""
    args = parse(argv)
    if getattr(args, "probe", False):
        probe(args)
        return 0
    res = run(args)
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0
