"""`etch bench lut`: the LUT GEMM (`--lut`) against its peers, side by side in one run.

For each K x N (default 4096x4096, 4096x11008, 11008x4096), batch (1, 8, 64) and thread
count (one, and all this process may use): etch's etch.LutGemm kernel at 1, 2, 3, 4 bits and
ternary (the path LutLowering picks is reported, and for batch > 1 timed as picked), etch's
weight-only dequantising kernel, ONNX Runtime fp32 MatMul, ORT MatMulNBits (4 and 2 bits,
blocks 32 and 128, accuracy_level 4 and 0, mlas.use_lut_gemm off and on) and numpy — each
runtime in its own process (`lut_peers.py`). Warm: one matrix in a hot loop; cold: cycling
through copies that together exceed the last-level cache (`--cold-mb`, default 1.5 x the
LLC), GEMV only; the streaming-read bandwidth of the same amount is measured here too, and
beside each cold run in its process (the cold goal's reference: other jobs' memory traffic
moves it by 2x on a shared machine).
Reported: microseconds, GB/s of weight bytes (codes + scales + zero points: every byte the
kernel must read), GOPS (2 M K N / t), the int8 tables' relative RMS error beside
MatMulNBits' own (accuracy_level 4 vs 0), and the issue's goals as ratios, met or not --
from wall time as the issue states them, and for one thread also from process CPU time
(`time.process_time`; on a shared machine the wall time of a one-thread run includes
waiting for a core, so the one-thread goals, the cold one among them, are judged on CPU
time, both printed). Context
beside the goals: the warm kernel's GB/s against a hot-loop stream of the same bytes, and
the machine's parallelism now (a compute-bound kernel, all threads vs one). Whole models
(`--lut-models`, default the zoo's tiny decoder): --lut at every bit width beside the same
weights without it and ORT's MatMulNBits of the float model (`lut_models.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

from passes.quantizer import SUPER_BLOCK

DEFAULT_SHAPES = "4096x4096,4096x11008,11008x4096"
BITS = ("1", "2", "3", "4", "t")
COLD_ORT = ("nbits4_b32_acc4_lut0", "nbits2_b32_acc4_lut1")


def add_arguments(g: argparse.ArgumentParser) -> None:
    """Options in `g`, the "lut benchmark" group that benchmarks/run.py makes."""
    g.add_argument("--shapes", default=DEFAULT_SHAPES, help="KxN list (default: %(default)s)")
    g.add_argument("--batches", default="1,8,64", help="rows per call (default: %(default)s)")
    g.add_argument("--lut-bits", default=",".join(BITS), help="etch bit widths, t = ternary")
    g.add_argument("--group", type=int, default=32, help="etch's scale block along K")
    g.add_argument("--scale-format", default="u8", choices=["fp16", "u8"],
                   help="etch's block scales: two-level u8 x float16 (default; 1- and 2-bit "
                        "GEMV also timed with fp16 scales beside) or fp16 values")
    g.add_argument("--blocks", default="32,128", help="MatMulNBits block sizes")
    g.add_argument("--cold-mb", type=float, help="cold working set (default 1.5 x LLC)")
    g.add_argument("--cold-shapes", type=int, default=1,
                   help="how many of the shapes get cold runs (GEMV; default 1)")
    g.add_argument("--lut-models", default="tiny_decoder",
                   help="zoo models timed whole, --lut vs ORT MatMulNBits ('' for none)")
    g.add_argument("--lut-threads", default="",
                   help="thread counts to run (default: 1 and all this process may use; "
                        "'1' alone fits a full run of the three shapes in ~30 min on a "
                        "loaded 2-core machine)")
    g.add_argument("--all-slow", action="store_true",
                   help="also time ORT's 2-bit accuracy_level 0 path past batch 1")


def llc_mb() -> float:
    """The last-level cache (MB) from sysfs, 32 if unknown."""
    from runtime.host_cpu import last_level_cache_bytes

    size = last_level_cache_bytes()
    return size / 2**20 if size else 32.0


def cpu_description() -> dict:
    from backends.tvm import target as targets
    from benchmarks.bench_tvm import cpu_name
    from compiler.options import CompileOptions

    info, _ = targets.cpu_info(CompileOptions(target="cpu"))
    return {"cpu": cpu_name(), "mcpu": info.mcpu, "features": list(info.features),
            "machine": platform.machine(), "threads": targets.default_threads(),
            "llc_mb": llc_mb()}


def spawn(job: dict) -> dict:
    """One job in a fresh process (thread pools never share cores across runtimes)."""
    t = str(job["threads"])
    env = {**os.environ, "TVM_NUM_THREADS": t, "TVM_BIND_THREADS": "0", "OMP_NUM_THREADS": t,
           "OPENBLAS_NUM_THREADS": t, "MKL_NUM_THREADS": t}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.lut_peers", json.dumps(job)],
                          capture_output=True, text=True, env=env, timeout=7200, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    desc = cpu_description()
    threads = sorted({int(t) for t in args.lut_threads.split(",") if t} or
                     {1, desc["threads"]})
    cold_mb = args.cold_mb or 1.5 * desc["llc_mb"]
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    common = {"seconds": args.seconds, "group": args.group, "skip_slow": not args.all_slow,
              "scale_format": args.scale_format,
              "blocks": [int(b) for b in args.blocks.split(",")]}
    k0, n0 = shapes[0]
    scale_bytes = 1 + 2 / SUPER_BLOCK if args.scale_format == "u8" else 2
    warm_mb = (k0 * n0 // 4 + k0 // args.group * n0 * scale_bytes) / 2**20  # 2-bit GEMV
    stream = {t: spawn({"kind": "stream", "threads": t, "cold_mb": cold_mb,
                        "warm_mb": warm_mb, **common}) for t in threads}
    models = {m: {str(t): spawn({"kind": "model", "model": m, "threads": t, **common})
                  for t in threads} for m in filter(None, args.lut_models.split(","))}
    rows = []
    for si, (k, n) in enumerate(shapes):
        for batch in (int(b) for b in args.batches.split(",")):
            for t in threads:
                cold = cold_mb if si < args.cold_shapes and batch == 1 else 0
                job = {"k": k, "n": n, "batch": batch, "threads": t, "cold_mb": cold, **common}
                rows.append({"k": k, "n": n, "batch": batch, "threads": t,
                             "etch": spawn({**job, "kind": "etch",
                                            "bits": args.lut_bits.split(","),
                                            "dequant_bits": ["2", "4"],
                                            "fp32_scale_bits": ["2"] if batch == 1 else [],
                                            "fp16_scale_bits": ["1", "2"] if batch == 1
                                            else []}),
                             "ort": spawn({**job, "kind": "ort", "cold": list(COLD_ORT)}),
                             "numpy": spawn({**job, "kind": "numpy"})})
    result = {"benchmark": "lut", **desc, "threads_run": threads, "cold_mb": cold_mb,
              "stream": {str(t): s for t, s in stream.items()},
              "load_average": list(os.getloadavg()), "group": args.group,
              "scale_format": args.scale_format, "rows": rows,
              "models": models}
    from benchmarks.lut_goals import context, goals

    result["goals"], result["context"] = goals(result), context(result)
    return result


def table(result: dict) -> str:
    from benchmarks.lut_goals import context_lines, goal_lines, row_lines
    from benchmarks.lut_models import model_lines

    stream = ", ".join(f"{t} thread(s) {s.get('gbps', float('nan')):.1f} GB/s"
                       for t, s in result["stream"].items())
    load = ", ".join(f"{v:.1f}" for v in result["load_average"])
    lines = [(f"etch bench lut -- {result['cpu']} ({result['mcpu']}, {result['machine']}), "
              f"{result['threads']} CPUs, LLC {result['llc_mb']:.0f} MB, load average {load}"),
             f"vector extensions: {' '.join(result['features'])}",
             f"streaming read of {result['cold_mb']:.0f} MB: {stream}",
             (f"etch codes: RTN, scale blocks of {result['group']} along K, "
              f"{result.get('scale_format', 'fp16')} block scales (err = int8 tables vs the "
              f"exact product; werr = quantised vs float weights' output); cold = cycling "
              f"through {result['cold_mb']:.0f} MB of copies")]
    for row in result["rows"]:
        lines += row_lines(row)
    for model, rows in result.get("models", {}).items():
        lines += model_lines(model, rows)
    return "\n".join(lines + goal_lines(result["goals"]) +
                     context_lines(result.get("context", [])))
