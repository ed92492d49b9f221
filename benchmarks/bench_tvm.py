"""etch's cpu target against ONNX Runtime and TVM's own ONNX frontend, per zoo model, batch 1.

Three ways to run each model, all from Python with numpy in and numpy out, same threads:
- etch: `compiler.compile(path, target="cpu", threads=T)`, then `artifact.run`;
- ORT: CPUExecutionProvider, intra_op_num_threads=T, sequential execution, all graph
  optimisations on (its default);
- TVM frontend: `tvm.relax.frontend.onnx.from_onnx`, `tvm.compile` with TVM's default
  pipeline (no tuning), Relax VM, TVM_NUM_THREADS=T.
Latency: the three are timed round-robin, several rounds of about `--seconds` each; each
round's mean per call, the best round reported (least disturbed by the rest of the machine).
Ratios are latency / ORT latency, measured in the same process, so they compare on one CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np

DEFAULT_MODELS = ("digits_mlp", "digits_cnn", "resnet_block", "mobilenet", "tiny_encoder",
                  "tiny_decoder", "gemv_k1024_n1024_b1", "gemv_k1024_n1024_b8")
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


def time_round_robin(runners: dict[str, Runner], seconds: float) -> dict[str, float]:
    """Best-round mean latency in microseconds of each runner, timed in alternation."""
    calls = {k: _calls_per_round(f, seconds) for k, f in runners.items()}
    best = {k: float("inf") for k in runners}
    for _ in range(ROUNDS):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls[name] * 1e6)
    return best


def etch_runner(path: str, inputs: dict, threads: int) -> tuple[Runner, float, object]:
    import compiler

    t0 = time.perf_counter()
    art = compiler.compile(path, target="cpu", threads=threads)
    seconds = time.perf_counter() - t0
    return (lambda: art.run(inputs)), seconds, art


def ort_runner(path: str, inputs: dict, threads: int) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, inputs)


def tvm_frontend_runner(path: str, inputs: dict, threads: int) -> tuple[Runner, float]:
    """TVM's ONNX importer and default build, as a TVM user would run the model."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    t0 = time.perf_counter()
    mod = from_onnx(onnx.load(path), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                                "num-cores": threads})
    ex = tvm.compile(mod, target=target)
    seconds = time.perf_counter() - t0
    vm = relax.VirtualMachine(ex, tvm.cpu())
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input
             if i.name in inputs]

    def run() -> object:
        out = vm["main"](*[tvm.runtime.tensor(inputs[n]) for n in names])
        return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]

    return run, seconds


def bench_model(name: str, threads: int, seconds: float) -> dict:
    """One model: compile times, latencies, ratios, and etch's max error against ORT."""
    from models import zoo

    path = str(zoo.model_path(name))
    inputs, expected = zoo.load_sample(name)
    run_etch, etch_s, art = etch_runner(path, inputs, threads)
    got = run_etch()
    err = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    runners = {"etch": run_etch, "ort": ort_runner(path, inputs, threads)}
    row: dict = {"etch_compile_s": round(etch_s, 2), "max_abs_err_vs_ort": err,
                 "kernels": art.manifest.get("kernels"), "schedules": art.manifest.get("schedules")}
    try:
        runners["tvm_frontend"], row["tvm_frontend_compile_s"] = tvm_frontend_runner(
            path, inputs, threads)
    except Exception as e:  # the peer may fail on a model; record it and go on
        row["tvm_frontend_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    latency = time_round_robin(runners, seconds)
    row.update({f"{k}_us": round(v, 1) for k, v in latency.items()})
    row.update({f"{k}_vs_ort": round(v / latency["ort"], 3) for k, v in latency.items()
                if k != "ort"})
    return row


def run(args: argparse.Namespace) -> dict:
    """The benchmark over `args.models` (default DEFAULT_MODELS)."""
    threads = int(getattr(args, "threads", 2) or 2)
    os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM's pool starts, for both TVMs
    models = list(getattr(args, "models", None) or DEFAULT_MODELS)
    results = {m: bench_model(m, threads, float(getattr(args, "seconds", 0.3)))
               for m in models}
    import tvm

    return {"benchmark": "tvm_cpu", "cpu": cpu_name(), "threads": threads,
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "batch": 1,
            "method": f"best of {ROUNDS} round-robin rounds, mean per call, numpy in/out",
            "models": results}


def table(result: dict) -> str:
    """The result as a text table: latencies (us), ratios to ORT, compile seconds."""
    head = (f"etch cpu vs ONNX Runtime vs TVM ONNX frontend -- {result['cpu']} "
            f"({result['mcpu']}), {result['threads']} threads, batch 1")
    cols = f"{'model':<22}{'etch us':>10}{'ORT us':>10}{'TVM-fe us':>11}{'etch/ORT':>10}" \
           f"{'fe/ORT':>9}{'etch s':>8}{'fe s':>7}"
    lines = [head, cols, "-" * len(cols)]
    for name, r in result["models"].items():
        fe = r.get("tvm_frontend_us")
        lines.append(f"{name:<22}{r['etch_us']:>10.1f}{r['ort_us']:>10.1f}"
                     f"{fe if fe is not None else float('nan'):>11.1f}"
                     f"{r['etch_vs_ort']:>10.2f}{r.get('tvm_frontend_vs_ort', float('nan')):>9.2f}"
                     f"{r['etch_compile_s']:>8.1f}{r.get('tvm_frontend_compile_s', float('nan')):>7.1f}")
    return "\n".join(lines)
