"""Encoder inference throughput on CPU: SSR-STF XS/S/B against MotionBERT's DSTformer, float32 and bfloat16.

Run: ``.venv/bin/python benchmarks/encoder.py [--quick] [--threads 1 2] [--variants XS S B DST] [--T 16 81 243]``

For every (model, T, threads, dtype) one subprocess (so that peak RSS is per config) builds the model with random
weights, runs it without autograd (``prepare_for_inference``) and prints:

- frames/s: median over timed calls (after one warm-up) of ``clips x T / seconds``. Clips per call: 16 at T=16,
  4 at T=81, 1 at T=243 (256, 324 and 243 frames per call);
- peak memory: the subprocess' peak RSS (``VmHWM``, reset after importing torch) minus its RSS at that point:
  weights + activations + allocator slack + lazily loaded kernels, in MiB;
- MACs/frame: ``macs_per_frame`` (``torch.utils.flop_counter``, batch 1, at that T);
- % of peak: achieved ``2 x MACs/frame x frames/s`` over this CPU's matmul peak, measured in the same run
  (2048^2 float32 / bf16 matmul, same thread count; 512^2 for bf16 without native support, where the "peak" is
  the scalar fallback GEMM and the percentage is not meaningful).

Then the target ratios: SSR-STF-B ÷ DSTformer frames/s (same dtype, T, threads; target >= 2x) and bf16 ÷ float32
for each model (target >= 3x). bf16 runs via ``torch.autocast`` (``--bf16-mode convert`` for a bf16 copy).

On a CPU without native bf16 (``bf16_is_fast()`` False: no AVX512-BF16/AMX), bf16 GEMMs take a scalar fallback
that is one to two orders of magnitude slower than float32; a full bf16 sweep would take hours. There, bf16 runs
only as a probe (1 thread, 1 clip at T=16, a single timed call) unless ``--full-bf16`` is given.

Reference (measured for MotionBERT's own DSTformer on an AMX machine, 1 thread, T=16 / 243): ~100 / ~98 frames/s
float32, ~280 / ~335 bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIPS_PER_CALL = {16: 16, 81: 4, 243: 1}
DST_NAME = "DST"  # MotionBERT's size: dim_feat 512, depth 5, mlp_ratio 2 (DSTformerConfig defaults)


def _rss_mib(field: str = "VmRSS") -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process in MiB, from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # ru_maxrss survives exec (it would report the parent's peak); VmHWM is per address space and "5" resets it.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _build(model_name: str) -> Any:
    from motion.encoders import build_encoder

    if model_name == DST_NAME:
        return build_encoder("dstformer", {})
    return build_encoder("ssrstf", {"variant": model_name})


def _time_calls(fn: Any, min_time: float, max_calls: int) -> list[float]:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_calls and (not times or time.perf_counter() - start < min_time or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) == 1 and times[0] > 20.0:  # one very slow call is enough (bf16 fallback)
            break
    return times


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one config in this (fresh) process; ``spec``: model, T, threads, dtype, clips, min_time, ..."""
    import torch

    from motion.encoders.inference import prepare_for_inference

    torch.set_num_threads(spec["threads"])
    _reset_peak_rss()
    base = _rss_mib()
    model = _build(spec["model"])
    run = prepare_for_inference(model, spec["dtype"], mode=spec["bf16_mode"])
    x = torch.randn(spec["clips"], spec["T"], 17, 3)
    times = _time_calls(lambda: run(x), spec["min_time"], spec["max_calls"])
    peak = _rss_mib("VmHWM")
    frames = spec["clips"] * spec["T"]
    return {"fps": frames / statistics.median(times), "calls": len(times), "peak_mib": peak - base}


def peak_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Matmul peak (FLOP/s) for one dtype and thread count."""
    import torch

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    n = spec["n"]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = _time_calls(lambda: a @ b, spec["min_time"], 20)
    return {"flops": 2 * n**3 / statistics.median(times), "n": n}


def _subprocess(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, f"--{kind}", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"{kind} {spec} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timing (0.5 s per config instead of 3 s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=["XS", "S", "B", DST_NAME], help=f"SSR-STF sizes, {DST_NAME}")
    parser.add_argument("--T", type=int, nargs="+", default=[16, 81, 243], choices=sorted(CLIPS_PER_CALL))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--bf16-mode", default="autocast", choices=["autocast", "convert"])
    parser.add_argument("--full-bf16", action="store_true", help="full bf16 sweep even without native bf16")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--peak-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.peak_worker:
        print(json.dumps(peak_worker(json.loads(args.peak_worker))))
        return

    import torch

    from motion.encoders import macs_per_frame
    from motion.encoders.inference import bf16_is_fast

    min_time = 0.5 if args.quick else 3.0
    fast_bf16 = bf16_is_fast("cpu")
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {cap}, native bf16: {fast_bf16}, cores {os.cpu_count()}")
    print(f"clips per call: {CLIPS_PER_CALL} (T: clips); inference_mode; random weights; bf16 via {args.bf16_mode}")
    if "bfloat16" in args.dtypes and not fast_bf16 and not args.full_bf16:
        print("no native bf16 on this CPU: bf16 runs only as a probe (1 thread, 1 clip at T=16, one timed call)")

    # Peak matmul throughput, same run.
    peaks: dict[tuple[str, int], float] = {}
    for dtype in args.dtypes:
        for th in args.threads:
            slow = dtype == "bfloat16" and not fast_bf16
            n = 512 if slow else 2048  # the bf16 fallback would take minutes at 2048
            peaks[dtype, th] = _subprocess("peak-worker", {"dtype": dtype, "threads": th, "n": n, "min_time": 1.0})[
                "flops"
            ]
            print(f"matmul peak {dtype:8s} {th} thread(s): {peaks[dtype, th] / 1e9:8.1f} GFLOP/s (n={n})")

    macs: dict[tuple[str, int], float] = {}
    for name in args.variants:
        model = _build(name)
        for T in args.T:
            macs[name, T] = macs_per_frame(model, T)
        del model

    rows: list[dict[str, Any]] = []
    header = f"{'model':6s} {'T':>4s} {'thr':>3s} {'dtype':8s} {'frames/s':>9s} {'calls':>5s} {'peak MiB':>8s}"
    header += f" {'MMACs/fr':>8s} {'% peak':>6s}"
    print()
    print(header)
    print("-" * len(header))
    for dtype in args.dtypes:
        probe = dtype == "bfloat16" and not fast_bf16 and not args.full_bf16
        for name in args.variants:
            for T in [16] if probe else args.T:
                for th in args.threads[:1] if probe else args.threads:
                    clips = 1 if probe else CLIPS_PER_CALL[T]
                    spec = {"model": name, "T": T, "threads": th, "dtype": dtype, "clips": clips,
                            "bf16_mode": args.bf16_mode, "min_time": min_time, "max_calls": 1 if probe else 50}
                    r = _subprocess("worker", spec)
                    pct = 100 * 2 * macs[name, T] * r["fps"] / peaks[dtype, th]
                    rows.append({**spec, **r})
                    print(f"{name:6s} {T:4d} {th:3d} {dtype:8s} {r['fps']:9.1f} {r['calls']:5d} {r['peak_mib']:8.0f}"
                          f" {macs[name, T] / 1e6:8.0f} {pct:6.1f}", flush=True)

    def fps(name: str, T: int, th: int, dtype: str) -> float | None:
        for r in rows:
            if (r["model"], r["T"], r["threads"], r["dtype"]) == (name, T, th, dtype):
                return float(r["fps"])
        return None

    print("\nSSR-STF-B / DSTformer frames/s (target >= 2x):")
    for dtype in args.dtypes:
        for T in args.T:
            for th in args.threads:
                b, d = fps("B", T, th, dtype), fps(DST_NAME, T, th, dtype)
                if b and d:
                    print(f"  {dtype:8s} T={T:3d} threads={th}: {b / d:5.2f}x  ({b:.1f} / {d:.1f})")
    print("bf16 / float32 frames/s, same model (target >= 3x):")
    for name in args.variants:
        for T in args.T:
            for th in args.threads:
                lo, hi = fps(name, T, th, "bfloat16"), fps(name, T, th, "float32")
                if lo and hi:
                    note = f" (bf16: 1 clip, float32: {CLIPS_PER_CALL[T]} clips)" if not fast_bf16 else ""
                    print(f"  {name:3s} T={T:3d} threads={th}: {lo / hi:5.2f}x  ({lo:.1f} / {hi:.1f}){note}")
    print("reference (MotionBERT's DSTformer, AMX machine, 1 thread, T=16/243): ~100/~98 fps float32, ~280/~335 bf16")


if __name__ == "__main__":
    main()
