"""`etch bench cnn`: the ImageNet-size zoo models, etch against ONNX Runtime and TVM.

Per model, batch (`--batch`, default 1 and 8) and thread count (`--cnn-threads`, default 1
and 2), side by side in one run: etch float, etch `--int` W8A8, ORT float, ORT int8
(`quantize_static`, QDQ and QOperator, the faster shown; and the same with AMX denied to
ORT, "ORTv": its VNNI kernels), TVM's own ONNX frontend with its
default build, and each one's compile time. Each runtime is built once per (model, batch)
in a process of its own (`cnn_peers`); a build that fails or runs past `--build-timeout` is
reported, not fatal. Per thread count each runtime is timed in `--cnn-repeats` fresh
processes (default 3), the runtimes taking turns, and its fastest process counts: on a
shared machine a slow spell lasts seconds and should not fall on one runtime alone.
Outputs are compared with ORT float's on the same inputs (etch float must agree to float
rounding; the int8 rows show their quantisation error). Ratios are latencies measured in
the same run; the load average is recorded beside them, since the machine may be shared.
Result: results/cnn.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import cnn_peers
from benchmarks.bench_tvm import cpu_name
from compiler.errors import EtchError

BATCHES = (1, 8)
INT8_FORMATS = ("qdq", "qop")  # ORT int8 runtimes: "ORT int8" is the faster of the two
TUNE_GAIN = 1.02  # `--tune` must make the worst model this much faster to count
THREADS = (1, 2)
# timing processes per runtime and thread count, taken in turns: on a shared VM a slow spell
# of seconds (two threads, Zen 5: mobilenet_v2 batch 8 14.1-14.7 ms, then 19-20 ms for a
# while; ORT 16.7-19.5 in turns with it) would otherwise fall on one runtime's only process
REPEATS = 3
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", nargs="+", type=int, default=list(BATCHES),
                   help="cnn: batch sizes (default 1 8)")
    p.add_argument("--cnn-threads", nargs="+", type=int, default=list(THREADS),
                   help="cnn: thread counts (default 1 2)")
    p.add_argument("--runtimes", nargs="+", choices=cnn_peers.RUNTIMES,
                   default=list(cnn_peers.DEFAULT_RUNTIMES),
                   help="cnn: runtimes to run (default all but etch_tuned)")
    p.add_argument("--tune-trials", type=int, default=64,
                   help="cnn: MetaSchedule trials of the etch_tuned runtime (default 64)")
    p.add_argument("--cnn-repeats", type=int, default=REPEATS,
                   help=f"cnn: timing processes per runtime and thread count, in turns; the "
                        f"fastest counts (default {REPEATS})")
    p.add_argument("--build-timeout", type=float, default=900,
                   help="cnn: seconds a runtime may take to build one model")


def run(args: argparse.Namespace) -> dict:
    from models import zoo

    models = [m for m in (getattr(args, "models", None) or list(zoo.IMAGENET))]
    os.environ[cnn_peers.TUNE_TRIALS] = str(getattr(args, "tune_trials", 64))
    seconds = float(getattr(args, "seconds", 0.3))
    repeats = int(getattr(args, "cnn_repeats", REPEATS))
    if repeats < 1:
        raise EtchError(f"--cnn-repeats {repeats}: each runtime needs at least one process")
    threads, batches = getattr(args, "cnn_threads", THREADS), getattr(args, "batch", BATCHES)
    for flag, values in (("--cnn-threads", threads), ("--batch", batches)):
        if any(v < 1 for v in values):
            raise EtchError(f"{flag} {' '.join(map(str, values))}: each must be 1 or more")
    rows = []
    for name in models:
        for batch in batches:
            rows += bench_model(name, batch, threads,
                                getattr(args, "runtimes", cnn_peers.DEFAULT_RUNTIMES),
                                seconds, float(getattr(args, "build_timeout", 900)), repeats)
    return {"benchmark": "cnn", "cpu": cpu_name(), "mcpu": _mcpu(), "isa": _isa(),
            "load_average": list(os.getloadavg()),
            "method": "one build per runtime and batch; per thread count, each runtime timed "
                      "in fresh processes taking turns with the others (--cnn-repeats), the "
                      "fastest kept (all in *_us_runs); per process the best round's mean "
                      "latency per call, numpy in/out",
            "rows": rows, "summary": summary(rows)}


def bench_model(name: str, batch: int, threads: list[int], runtimes: list[str],
                seconds: float, timeout: float, repeats: int = REPEATS) -> list[dict]:
    """Rows (one per thread count) for model `name` at `batch`: each runtime timed in
    `repeats` fresh processes, the runtimes taking turns, the fastest process kept."""
    from models import zoo

    sample = zoo.load_sample(name)[0]
    inputs = cnn_peers.batched_inputs(sample, batch)
    with tempfile.TemporaryDirectory(prefix=f"etch-bench-cnn-{name}-") as tmp:
        root = Path(tmp)
        model = zoo.model_path(name)
        if batch != 1:
            model = root / f"{name}.b{batch}.onnx"
            cnn_peers.batched_model(zoo.model_path(name), batch, model)
        np.savez(root / "inputs.npz", **inputs)
        builds = {r: _spawn(["build", r, str(model), str(root / "inputs.npz"), str(root / r)],
                            timeout) for r in runtimes}
        errors = _errors(root, builds)
        rows = []
        for t in threads:
            row: dict = {"model": name, "batch": batch, "threads": t}
            timed: dict[str, list[dict]] = {r: [] for r in runtimes if "error" not in builds[r]}
            for _ in range(repeats):  # runtimes in turn, so a slow spell hits each alike
                for r, runs in timed.items():
                    runs.append(_spawn(["time", r, str(root / r), str(root / "inputs.npz"),
                                        str(t), str(seconds)], timeout, threads=t))
            for r in runtimes:
                if "error" in builds[r]:
                    row[f"{r}_error"] = builds[r]["error"]
                    continue
                row.update({f"{r}_{k}": v for k, v in {**builds[r], **_best(timed[r])}.items()})
            row.update(errors)
            rows.append(_ratios(row))
            print(_row(row), file=sys.stderr, flush=True)
        return rows


def _best(runs: list[dict]) -> dict:
    """The fastest of a runtime's timing processes (`us`), every one's in `us_runs`; the
    first error if none ran."""
    us = [run["us"] for run in runs if "us" in run]
    if not us:
        return runs[0]
    return {"us": min(us), "us_runs": us}


def _spawn(argv: list[str], timeout: float, threads: int = 1) -> dict:
    """One worker (`python -m benchmarks.bench_cnn ...`): its last stdout line is JSON."""
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "TVM_BIND_THREADS": "0",
           "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_cnn", *argv],
                              capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _errors(root: Path, builds: dict) -> dict:
    """Max |output - ORT float output| of every runtime that built."""
    ref = root / "ort" / "outputs.npz"
    if not ref.exists():
        return {}
    want = np.load(ref)
    out = {}
    for r in builds:
        path = root / r / "outputs.npz"
        if r != "ort" and path.exists():
            got = np.load(path)
            out[f"{r}_max_err"] = float(max(np.max(np.abs(got[k] - want[k])) for k in want))
    out["ort_max_abs"] = float(max(np.max(np.abs(want[k])) for k in want))
    return out


def _ratios(row: dict) -> dict:
    for suffix in ("", cnn_peers.NO_AMX):
        int8 = [(row[f"ort_{k}{suffix}_us"], k) for k in INT8_FORMATS
                if row.get(f"ort_{k}{suffix}_us") is not None]
        if int8:
            row[f"ort_int8{suffix}_us"], row[f"ort_int8{suffix}_format"] = min(int8)
    pairs = {"etch_vs_ort": ("etch_us", "ort_us"), "tvm_fe_vs_ort": ("tvm_fe_us", "ort_us"),
             "int_speedup": ("etch_us", "etch_int_us"),
             "int_vs_ort_int8": ("etch_int_us", "ort_int8_us"),
             "int_vs_ort_int8_noamx": ("etch_int_us", "ort_int8_noamx_us"),
             "tune_speedup": ("etch_us", "etch_tuned_us")}
    for key, (a, b) in pairs.items():
        if row.get(a) and row.get(b):
            row[key] = round(row[a] / row[b], 3)
    return row


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summary(rows: list[dict]) -> dict:
    """Geometric means of each ratio per (batch, threads) and overall, and the goals."""
    keys = ("etch_vs_ort", "int_speedup", "int_vs_ort_int8", "int_vs_ort_int8_noamx",
            "tvm_fe_vs_ort")
    groups: dict[str, list[dict]] = {"all": rows}
    for r in rows:
        groups.setdefault(f"b{r['batch']} t{r['threads']}", []).append(r)
    out = {g: {k: geomean([r[k] for r in rs if k in r]) for k in keys} for g, rs in groups.items()}
    compile_s = [r[f"{e}_compile_s"] for r in rows for e in cnn_peers.ETCH
                 if f"{e}_compile_s" in r]
    allg = out["all"]
    worst = max((r for r in rows if "etch_vs_ort" in r), key=lambda r: r["etch_vs_ort"],
                default=None)
    out["goals"] = {
        "etch float geomean <= 0.85x ORT": _met(allg["etch_vs_ort"], lambda v: v <= 0.85),
        "--int >= 1.5x etch float (geomean)": _met(allg["int_speedup"], lambda v: v >= 1.5),
        "--int faster than ORT int8 (geomean)": _met(allg["int_vs_ort_int8"], lambda v: v < 1),
        "--int faster than ORT int8 on VNNI, AMX denied (geomean)":
            _met(allg["int_vs_ort_int8_noamx"], lambda v: v < 1),
        "compile < 30 s per model": _met(max(compile_s, default=None), lambda v: v < 30),
        # an improvement beyond the noise of a best-of-rounds latency: 2% at least (a 64-trial
        # tune of squeezenet1_1 measured 1.003x, which `v > 1` had called met)
        "--tune improves the worst model by 2% or more"
        + (f" ({worst['model']} b{worst['batch']} t{worst['threads']})" if worst else ""):
            _met(worst.get("tune_speedup") if worst else None, lambda v: v >= TUNE_GAIN),
    }
    return out


def _met(value: float | None, ok) -> str:
    return "not measured" if value is None else f"{'met' if ok(value) else 'NOT met'} " \
                                                 f"({value:.2f})"


def _isa() -> list[str]:
    from runtime.host_cpu import host_flags

    flags = host_flags() or set()
    return [f for f in ISA_FLAGS if f in flags]


def _mcpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def table(result: dict) -> str:
    """Latencies (ms), ratios and compile seconds, one line per model, batch and threads."""
    head = (f"etch bench cnn -- {result['cpu']} ({result['mcpu']}; {' '.join(result['isa'])}),"
            f" load average {result['load_average'][0]:.1f} at the end")
    cols = (f"{'model':<16}{'b':>2}{'t':>2}{'etch ms':>9}{'int ms':>8}{'ORT ms':>8}"
            f"{'ORTq ms':>9}{'ORTv ms':>9}{'TVMfe ms':>10}{'e/ORT':>7}{'fl/int':>7}{'int/q':>7}"
            f"{'int/v':>7}{'fe/ORT':>7}{'tune x':>7}"
            f"{'etch s':>7}{'int s':>6}{'fe s':>6}")
    lines = [head, cols, "-" * len(cols)] + [_row(r) for r in result["rows"]]
    lines.append("geomeans: " + "; ".join(
        f"{g}: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items() if v is not None)
        for g, s in result["summary"].items() if g != "goals"))
    lines += [f"goal {k}: {v}" for k, v in result["summary"]["goals"].items()]
    return "\n".join(lines)


def _row(r: dict) -> str:
    def ms(key: str) -> str:  # "err": the runtime failed; "-": it was not asked for
        v = r.get(f"{key}_us")
        if v is None:
            if key.startswith("ort_int8"):  # the faster of the formats (`_ratios`)
                suffix = key.removeprefix("ort_int8")
                sources = [f"ort_{f}{suffix}" for f in INT8_FORMATS]
            else:
                sources = [key]
            return "err" if any(f"{k}_error" in r for k in sources) else "-"
        return f"{v / 1e3:.2f}"

    def g(key: str, width: int, fmt: str = ".2f") -> str:
        v = r.get(key)
        return f"{'-' if v is None else format(v, fmt):>{width}}"

    def q(key: str) -> str:
        return ms(key) + {"qdq": "d", "qop": "o"}.get(r.get(f"{key}_format", ""), "")

    return (f"{r['model']:<16}{r['batch']:>2}{r['threads']:>2}{ms('etch'):>9}{ms('etch_int'):>8}"
            f"{ms('ort'):>8}{q('ort_int8'):>9}{q('ort_int8_noamx'):>9}{ms('tvm_fe'):>10}"
            f"{g('etch_vs_ort', 7)}{g('int_speedup', 7)}{g('int_vs_ort_int8', 7)}"
            f"{g('int_vs_ort_int8_noamx', 7)}{g('tvm_fe_vs_ort', 7)}{g('tune_speedup', 7)}"
            f"{g('etch_compile_s', 7, '.1f')}"
            f"{g('etch_int_compile_s', 6, '.1f')}{g('tvm_fe_compile_s', 6, '.1f')}")


def worker(argv: list[str]) -> dict:
    """`build RUNTIME MODEL INPUTS OUT`: build, run once, save outputs; `time RUNTIME BUILT
    INPUTS THREADS SECONDS`: load and time."""
    mode, runtime, path, inputs_path = argv[:4]
    inputs = dict(np.load(inputs_path))
    if mode == "build":
        out = Path(argv[4])
        built = cnn_peers.build(runtime, Path(path), inputs, out)
        got = cnn_peers.load(runtime, out, inputs, 1)()
        got = got if isinstance(got, dict) else {"output": np.asarray(got)}
        np.savez(out / "outputs.npz", **_keyed(got, Path(path)))
        return built
    fn = cnn_peers.load(runtime, Path(path), inputs, int(argv[4]))
    return {"us": round(cnn_peers.latency_us(fn, float(argv[5])), 1)}


def _keyed(outputs: dict, model: Path) -> dict:
    """Outputs keyed by the model's output names (TVM's frontend returns them unnamed)."""
    import onnx

    names = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
    if set(outputs) == set(names):
        return outputs
    return dict(zip(names, outputs.values()))


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1:])))
