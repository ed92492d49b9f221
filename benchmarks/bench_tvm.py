"""etch's cpu target against ONNX Runtime and TVM's own ONNX frontend, per zoo model, batch 1.

Three ways to run each model, all from Python with numpy in and numpy out, same threads,
each in its own process (their thread pools spin while idle and would steal each other's
cores):
- etch: `compiler.compile(path, target="cpu", threads=T)`, then `artifact.run`;
- ORT: CPUExecutionProvider, intra_op_num_threads=T, sequential execution, all graph
  optimisations on (its default);
- TVM frontend: `tvm.relax.frontend.onnx.from_onnx`, `tvm.compile` with TVM's default
  pipeline (no tuning), Relax VM, TVM_NUM_THREADS=T (both TVMs with TVM_BIND_THREADS=0).
- on a CPU with AVX-512, etch at `vector_bits=256` and at its default 512 in one process,
  timed in alternating rounds (the `256b` columns: the same kernels at half the width; see
  backends/tvm/target.py for the choice).
Latency: several rounds of about `--seconds` each, each round's mean per call; the best
round of two passes (run in mirrored order) is reported: the least disturbed by the rest of
the machine. Ratios are latency / ORT latency on the same CPU in the same run; the load
average is recorded, because a busy machine slows the runtimes unequally. Compile times
exclude Python imports (TVM imports torch when it is installed: ~5 s once per process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

DEFAULT_MODELS = ("digits_mlp", "digits_cnn", "digits_cnn_legacy", "resnet_block", "mobilenet",
                  "tiny_encoder", "tiny_decoder", "gemv_k1024_n1024_b1", "gemv_k1024_n1024_b8")
ROUNDS = 7
Runner = Callable[[], object]


def cpu_name() -> str:
    """The CPU's marketing name (from /proc/cpuinfo), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _calls_per_round(fn: Runner, seconds: float) -> int:
    fn()
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 3:
        fn()
        calls += 1
    return max(3, calls * 3)


def _round_us(fn: Runner, calls: int) -> float:
    """One round's mean latency per call, in microseconds."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def best_latency_us(fn: Runner, seconds: float) -> float:
    """The best of ROUNDS rounds' mean latency per call, in microseconds."""
    calls = _calls_per_round(fn, seconds)
    return min(_round_us(fn, calls) for _ in range(ROUNDS))


def best_latency_pair_us(a: Runner, b: Runner, seconds: float) -> tuple[float, float]:
    """`best_latency_us` of a and of b, their rounds taken in turns: a load that drifts
    during the measurement slows both alike."""
    calls = (_calls_per_round(a, seconds), _calls_per_round(b, seconds))
    best = [float("inf"), float("inf")]
    for _ in range(ROUNDS):
        for k, fn in enumerate((a, b)):
            best[k] = min(best[k], _round_us(fn, calls[k]))
    return best[0], best[1]


def etch_runner(path: str, inputs: dict, threads: int, **options) -> tuple[Runner, object]:
    """etch's cpu artifact for the model, and the artifact (for its manifest)."""
    import compiler

    art = compiler.compile(path, target="cpu", threads=threads, **options)
    return (lambda: art.run(inputs)), art


def etch_nofuse_runner(path: str, inputs: dict, threads: int) -> tuple[Runner, object]:
    """etch without layer fusion (`--no-fuse`): shows what fusion is worth."""
    return etch_runner(path, inputs, threads, fuse=False)


def etch_256_runner(path: str, inputs: dict, threads: int) -> tuple[Runner, object, Runner]:
    """etch with 256-bit vectors (`--vector-bits 256`) on a CPU that has 512, its artifact,
    and etch at its default 512 bits (timed in turns with it)."""
    narrow, art = etch_runner(path, inputs, threads, vector_bits=256)
    return narrow, art, etch_runner(path, inputs, threads)[0]


def host_has_512() -> bool:
    """Whether etch builds 512-bit kernels for this machine (its default on AVX-512)."""
    from backends.tvm import target as targets
    from compiler.options import CompileOptions

    return targets.cpu_target(CompileOptions(target="cpu"))[1].vector_bits == 512


def ort_runner(path: str, inputs: dict, threads: int) -> Runner:
    """An ONNX Runtime session with `threads` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, inputs)


def tvm_frontend_runner(path: str, inputs: dict, threads: int) -> Runner:
    """TVM's ONNX importer and default build, as a TVM user would run the model."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(path), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                                "num-cores": threads})
    ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input
             if i.name in inputs]

    def run() -> object:
        out = vm["main"](*[tvm.runtime.tensor(inputs[n]) for n in names])
        return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]

    return run


def _import_everything() -> None:
    import onnxruntime  # noqa: F401
    import tvm.relax.frontend.onnx  # noqa: F401

    import backends.tvm.builder  # noqa: F401
    import compiler.driver  # noqa: F401
    import runtime.tvm_executor  # noqa: F401


RUNNERS = {"etch": etch_runner, "etch_nofuse": etch_nofuse_runner, "ort": ort_runner,
           "tvm_frontend": tvm_frontend_runner, "etch_256": etch_256_runner}


def worker(runtime: str, name: str, threads: int, seconds: float) -> dict:
    """In a fresh process: build `runtime` for model `name`, time it, check etch's error."""
    from models import zoo

    path = str(zoo.model_path(name))
    inputs, expected = zoo.load_sample(name)
    _import_everything()  # compile times below exclude one-off Python imports
    t0 = time.perf_counter()
    built = RUNNERS[runtime](path, inputs, threads)
    row = {"compile_s": round(time.perf_counter() - t0, 2)}
    fn = built[0] if isinstance(built, tuple) else built
    if runtime.startswith("etch"):
        got, art = fn(), built[1]
        row["max_abs_err_vs_ort"] = max(float(np.max(np.abs(got[k] - expected[k])))
                                        for k in expected)
        row.update(kernels=art.manifest.get("kernels"), schedules=art.manifest.get("schedules"),
                   vector_bits=art.manifest.get("vector_bits"))
    if isinstance(built, tuple) and len(built) == 3:
        us, row["us_512"] = best_latency_pair_us(fn, built[2], seconds)
    else:
        us = best_latency_us(fn, seconds)
    row["us"] = round(us, 1)
    return row


def _spawn(runtime: str, name: str, threads: int, seconds: float) -> dict:
    """`worker` in a child process: each runtime's thread pool (ORT's and TVM's both spin
    while idle) never competes with another's for the same cores."""
    cmd = [sys.executable, "-m", "benchmarks.bench_tvm", runtime, name, str(threads),
           str(seconds)]
    # both TVMs unpinned, as etch's executor runs (see runtime/tvm_executor.py)
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "TVM_BIND_THREADS": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800,
                          check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_model(name: str, threads: int, seconds: float, runtimes: list[str]) -> dict:
    """One model, each runtime in its own process, twice in mirrored order (machine load
    drifts); the faster pass of each runtime counts."""
    runs: dict[str, list[dict]] = {r: [] for r in runtimes}
    for order in (runtimes, runtimes[::-1]):
        for runtime in order:
            runs[runtime].append(_spawn(runtime, name, threads, seconds))
    row: dict = {}
    for runtime, results in runs.items():
        ok = [r for r in results if "us" in r]
        if not ok:
            row[f"{runtime}_error"] = results[0].get("error")
            continue
        best = min(ok, key=lambda r: r["us"])
        row[f"{runtime}_us"] = best.pop("us")
        row[f"{runtime}_compile_s"] = min(r["compile_s"] for r in ok)
        best.pop("compile_s")
        if runtime == "etch_nofuse":  # only its kernel count is new; etch's row keeps the rest
            best = {"unfused_kernels": best.get("kernels")}
        elif runtime == "etch_256":  # its ratio to 512 bits, timed in the same process
            best = {"etch_256_vs_512": round(row["etch_256_us"] / best["us_512"], 3)}
        row.update(best)
    for runtime in ("etch", "etch_nofuse", "tvm_frontend", "etch_256"):
        if f"{runtime}_us" in row and "ort_us" in row:
            row[f"{runtime}_vs_ort"] = round(row[f"{runtime}_us"] / row["ort_us"], 3)
    return row


def run(args: argparse.Namespace) -> dict:
    """The benchmark over `args.models` (default DEFAULT_MODELS)."""
    threads = int(getattr(args, "threads", 2) or 2)
    models = list(getattr(args, "models", None) or DEFAULT_MODELS)
    runtimes = [r for r in RUNNERS if r != "etch_256" or host_has_512()]
    results = {m: bench_model(m, threads, float(getattr(args, "seconds", 0.3)), runtimes)
               for m in models}
    import tvm

    return {"benchmark": "tvm_cpu", "cpu": cpu_name(), "threads": threads,
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "batch": 1,
            "load_average": list(os.getloadavg()),
            "method": f"per-runtime process, best of 2x{ROUNDS} rounds, mean per call, "
                      f"numpy in/out",
            "models": results}


def table(result: dict) -> str:
    """The result as a text table: latencies (us), ratios to ORT, compile seconds."""
    head = (f"etch cpu vs ONNX Runtime vs TVM ONNX frontend -- {result['cpu']} "
            f"({result['mcpu']}), {result['threads']} threads, batch 1")
    wide = any("etch_256_us" in r for r in result["models"].values())
    cols = (f"{'model':<22}{'etch us':>9}{'unfused':>9}{'ORT us':>9}{'TVM-fe us':>11}"
            f"{'etch/ORT':>9}{'unf/ORT':>8}{'fe/ORT':>8}{'kernels':>9}{'etch s':>7}{'fe s':>6}"
            + (f"{'256b us':>9}{'256/512':>8}" if wide else ""))
    lines = [head, cols, "-" * len(cols)]
    for name, r in result["models"].items():
        lines.append(_row(name, r) + (_width_cols(r) if wide else ""))
    if wide:
        lines.append("etch builds 512-bit kernels on this CPU; 256b us: --vector-bits 256; "
                     "256/512: the two timed in turns in one process")
    return "\n".join(lines)


def _width_cols(r: dict) -> str:
    us, ratio = r.get("etch_256_us"), r.get("etch_256_vs_512")
    return (f"{float('nan') if us is None else us:>9.1f}"
            f"{float('nan') if ratio is None else ratio:>8.2f}")


def _row(name: str, r: dict) -> str:
    def g(key: str) -> float:
        v = r.get(key)
        return float("nan") if v is None else float(v)

    kernels = f"{r.get('kernels', '?')}/{r.get('unfused_kernels', '?')}"
    return (f"{name:<22}{g('etch_us'):>9.1f}{g('etch_nofuse_us'):>9.1f}{g('ort_us'):>9.1f}"
            f"{g('tvm_frontend_us'):>11.1f}{g('etch_vs_ort'):>9.2f}{g('etch_nofuse_vs_ort'):>8.2f}"
            f"{g('tvm_frontend_vs_ort'):>8.2f}{kernels:>9}{g('etch_compile_s'):>7.1f}"
            f"{g('tvm_frontend_compile_s'):>6.1f}")


if __name__ == "__main__":  # the per-runtime worker process of `_spawn`
    print(json.dumps(worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
