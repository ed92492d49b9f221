"""The runtimes `etch bench lut` times, each in a worker process of its own.

`python -m benchmarks.lut_peers JOB_JSON` runs one job (one runtime, one shape, batch and
thread count) and prints one JSON line. Kinds:
- "etch": for each bit width (1-4, "t" ternary) the weights quantised by etch (RTN, blocks of
  `group` along K, block scales in `scale_format`: fp16 values, or u8 two-level scales --
  and for `fp16_scale_bits` the same kernel with fp16 scales beside them), LutLowering
  with the host's LutTarget (the path the pass picks, and why), the etch.LutGemm kernel
  with its codes and scales as inputs (so cold runs cycle through copies without
  recompiling; the tables are built inside every call), the int8 tables' error vs the
  exact product of the same weights, the quantised weights' output error vs the float
  weights (`weight_rel_rms`, per scale format); and etch's weight-only
  dequantising kernel of the same codes (MatMul of an etch.Dequant).
- "ort": ONNX Runtime fp32 MatMul, and MatMulNBits (ORT's MatMulNBitsQuantizer) at 4 and 2
  bits, blocks 32 and 128, accuracy_level 4 and 0, session option mlas.use_lut_gemm off and
  on; cold copies have random codes and scales (any bytes are valid packed codes) and do not
  spin while idle.
- "numpy": float32 x @ W.
- "model": a zoo model whole, etch --lut beside ORT (`lut_models.py`).
  Cold runs also time the streaming read of `cold_mb` right before and after (the better
  of the two is kept: on a shared machine other jobs' memory traffic moves it).
- "stream": the streaming-read bandwidth of a buffer of `cold_mb` (a parallel TVM sum), of
  `warm_mb` in a hot loop, and a compute-bound parallel kernel's time (the CPUs this process
  gets on a shared machine).
Warm: one matrix, hot loop, in the layout the pass picks for it (a one-matrix model whose
weights fit the host's cache). Cold: cycling through copies that together hold `cold_mb`
(more than the last-level cache), in the layout the pass picks for a model whose weights do
not fit (`cold_layout`; for a one-row GEMV on an AMD Zen VNNI CPU the VBMI layouts, on an
Intel one the same vpdpbusd layouts as warm). Times are the
best of several rounds of the mean per call, wall clock and process CPU time (`*cpu_us`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

ROUNDS = 5
Runner = Callable[[], object]


def best_times(fn: Runner, seconds: float) -> tuple[float, float]:
    """(wall, CPU) microseconds per call, each the best of ROUNDS rounds' mean; a round
    lasts about `seconds`. CPU is the process's user + system time: on a shared machine a
    one-thread run's CPU time is the work itself, its wall time also the waits for a core
    (with more threads, idle pool workers spinning count too)."""
    fn()
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 4 or calls < 2:
        fn()
        calls += 1
    per = max(2, int(calls * 4 * seconds / max(time.perf_counter() - t0, 1e-9) / 4))
    wall = cpu = float("inf")
    for _ in range(ROUNDS):
        c0, t0 = _cpu_seconds(), time.perf_counter()
        for _ in range(per):
            fn()
        wall = min(wall, (time.perf_counter() - t0) / per * 1e6)
        cpu = min(cpu, (_cpu_seconds() - c0) / per * 1e6)
    return wall, cpu


def _cpu_seconds() -> float:
    """The process's CPU time (clock_gettime: nanoseconds; os.times counts 10 ms ticks, 3% of
    a 0.3 s round)."""
    return time.process_time()


def best_us(fn: Runner, seconds: float) -> float:
    """Best of ROUNDS rounds' mean wall latency per call (us)."""
    return best_times(fn, seconds)[0]


def cold_times(fns: list[Runner], seconds: float) -> tuple[float, float]:
    """(wall, CPU) microseconds per call cycling through `fns` (each a different matrix)."""
    state = {"k": 0}

    def step() -> object:
        state["k"] = (state["k"] + 1) % len(fns)
        return fns[state["k"]]()

    for f in fns:  # touch every copy once
        f()
    return best_times(step, max(seconds, 0.05 * len(fns)))




def copies(bytes_each: int, cold_mb: float) -> int:
    return max(2, int(np.ceil(cold_mb * 2**20 / max(bytes_each, 1))))


# ---- etch -------------------------------------------------------------------------------------
def etch_graph(k: int, n: int, batch: int, bits: str, group: int, half: bool = True,
               scale_format: str = "fp16"):
    """MatMul(x [batch, K], etch.Dequant(codes, scales)) with etch's RTN codes of the seeded
    weight (scales float16 values, as QuantizeWeights makes them, or two-level u8 x float16
    ones under `scale_format` u8; `half` False: arbitrary float32 scales, which LutLowering
    stores in four bytes); the codes' dequantised weight and the float weight (float64)."""
    from compiler.ir import Graph, Node, Value
    from models.gemv import gemv_weight
    from passes.quantize_weights import scheme_of
    from passes.quantizer import dequantize, requantise, rtn, two_level

    scheme = scheme_of(None if bits == "t" else int(bits), bits == "t", True, half)
    m = gemv_weight(k, n).T.astype(np.float64)
    q, s, z = rtn(m, scheme, 1, group, search=False)
    if scale_format == "u8":  # QuantizeWeights' two-level scales, codes chosen against them
        s = two_level(s)
        q = requantise(m, s, z, scheme, 1, group)
    g = Graph("lut_bench")
    g.add_value(Value("x", (batch, k)))
    g.inputs.append("x")
    qc = g.add_const("q", np.ascontiguousarray(q.T).astype(np.int8))
    sc = g.add_const("s", np.ascontiguousarray(s.T).astype(np.float32))
    g.add_value(Value("w", (k, n)))
    g.add_node(Node("etch.Dequant", [qc.name, sc.name], ["w"], {
        "group_axis": 0, "group_size": group, "bits": scheme.bits, "kind": scheme.kind}))
    g.add_value(Value("y", (batch, n)))
    g.add_node(Node("MatMul", ["x", "w"], ["y"]))
    g.outputs.append("y")
    return g, dequantize(q, s, z, 1, group).T, m.T


def vm_of(graph, threads: int, num_input: int | None = None):
    """The graph lowered, scheduled and compiled as `etch compile --target cpu` does. With
    `num_input`, main's parameters past the first `num_input` are weights (the codes and
    scales `_as_inputs` made parameters, so the cold runs can swap them): the VM checks
    them no more on each call than an artifact's weights (backends/tvm/weights.py)."""
    import tvm
    from tvm import relax

    from backends.tvm import lower, schedules
    from backends.tvm import target as targets
    from backends.tvm.builder import vm_passes
    from compiler.options import CompileOptions

    target_json, info = targets.cpu_target(CompileOptions(target="cpu", threads=threads))
    target = tvm.target.Target(target_json)
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=info.lanes), target)
    if num_input is not None:
        mod["main"] = mod["main"].with_attr("num_input", num_input)
    ex = tvm.compile(mod, target=target, relax_pipeline=vm_passes())
    return relax.VirtualMachine(ex, tvm.cpu()), schedules.rule_names(mod)


def _as_inputs(graph):
    """The LutGemm graph with its codes/scales/zeros as inputs; returns their arrays."""
    node = next(nd for nd in graph.nodes if nd.op == "etch.LutGemm")
    arrays = {}
    for name in filter(None, node.inputs[1:]):
        v = graph.values[name]
        arrays[name], v.data = v.data, None
        graph.inputs.append(name)
    return arrays


def etch_job(job: dict) -> dict:
    """LUT kernel (warm, cold, error) and the dequantising kernel for each bit width."""
    from compiler import pipeline
    from compiler.options import CompileOptions

    target = pipeline.lut_target(CompileOptions(target="cpu", threads=job["threads"]))
    return {bits: _etch_bits(job, bits, target) for bits in job["bits"]}


def _etch_bits(job: dict, bits: str, target) -> dict:
    import tvm

    from passes.lut_lowering import LutLowering

    k, n, batch, threads = job["k"], job["n"], job["batch"], job["threads"]
    fmt = job.get("scale_format", "fp16")
    graph, w_exact, w_float = etch_graph(k, n, batch, bits, job["group"], scale_format=fmt)
    x = np.random.default_rng(batch).standard_normal((batch, k)).astype(np.float32)
    xt = tvm.runtime.tensor(x)
    lut, _ = LutLowering("int8", target, fmt).run(graph)
    [entry] = json.loads(lut.metadata["etch.lut"])
    row: dict = {"pass_picks": entry["kernel"], "reason": entry["reason"],
                 "scales": entry.get("scales", "float32"), "layout": entry.get("layout")}
    vm, arrays, row["rules"] = _lut_vm(graph, lut, entry, target, threads)
    args = [tvm.runtime.tensor(a) for a in arrays.values()]
    row["lut_us"], row["lut_cpu_us"] = best_times(lambda: vm["main"](xt, *args),
                                                  job["seconds"])
    row["lut_bytes"] = int(sum(a.nbytes for a in arrays.values()))
    if bits in job.get("fp32_scale_bits", []):  # the same kernel streaming float32 scales
        row["fp32_scales"] = _alt_scales(job, bits, target, x, "fp32")
    if bits in job.get("fp16_scale_bits", []) and fmt != "fp16":
        row["fp16_scales"] = _alt_scales(job, bits, target, x, "fp16")
    y = vm["main"](xt, *args).numpy().astype(np.float64)
    exact = x.astype(np.float64) @ w_exact
    row["int8_rel_rms"] = float(np.sqrt(((y - exact) ** 2).mean() / (exact ** 2).mean()))
    row["weight_rel_rms"] = _rel_rms(x, w_exact, w_float)
    if job.get("cold_mb") and batch == 1:
        # cold stands for a model whose weights exceed the cache: its layout is the one the
        # pass picks for such a model (on Zen the one-row VBMI layouts), not the warm matrix's
        streamed = dataclasses.replace(target, cache_bytes=None)
        cold_lut, _ = LutLowering("int8", streamed, fmt).run(graph)
        [cold_entry] = json.loads(cold_lut.metadata["etch.lut"])
        row["cold_layout"] = cold_entry.get("layout")
        if row["cold_layout"] != row["layout"]:
            vm, arrays, _ = _lut_vm(graph, cold_lut, cold_entry, streamed, threads)
        before = _stream_gbps(job["cold_mb"], job["seconds"])
        row["lut_cold_us"], row["lut_cold_cpu_us"] = _etch_cold(vm, xt, arrays, job)
        after = _stream_gbps(job["cold_mb"], job["seconds"])
        # the streaming read beside the cold run (other jobs' memory traffic moves it)
        row["cold_stream_gbps"] = max(before[0], after[0])
        row["cold_stream_cpu_gbps"] = max(before[1], after[1])
    if bits in job.get("dequant_bits", []):
        dq, _ = vm_of(graph, threads)
        row["dequant_us"], row["dequant_cpu_us"] = best_times(lambda: dq["main"](xt),
                                                              job["seconds"])
        row["dequant_bytes"] = int(sum(graph.values[i].data.nbytes for i in ("q", "s")))
    return row


def _lut_vm(graph, lut, entry: dict, target, threads: int) -> tuple:
    """(VM, code/scale arrays, rules) of the LUT kernel, forced where the pass did not pick
    it (batch past the row threshold)."""
    from passes.lut_lowering import LutLowering

    fmt = "u8" if "x float16" in entry.get("scales", "") else "fp16"
    forced = lut if entry["kernel"] == "lut" else LutLowering(
        "int8", dataclasses.replace(target, max_rows=1 << 30), fmt).run(graph)[0]
    arrays = _as_inputs(forced)
    vm, rules = vm_of(forced, threads, num_input=len(forced.inputs) - len(arrays))
    return vm, arrays, rules


def _rel_rms(x: np.ndarray, w_quant: np.ndarray, w_float: np.ndarray) -> float:
    """Relative RMS of x @ W_quant against x @ W_float (the quantisation's output error)."""
    want = x.astype(np.float64) @ w_float
    got = x.astype(np.float64) @ w_quant
    return float(np.sqrt(((got - want) ** 2).mean() / (want ** 2).mean()))


def _alt_scales(job: dict, bits: str, target, x: np.ndarray, kind: str) -> dict:
    """The LUT kernel of the same weight with other scales: "fp32" (not float16 values,
    stored as float32) or "fp16" (QuantizeWeights' default float16 values)."""
    import tvm

    from passes.lut_lowering import LutLowering

    graph, w_exact, w_float = etch_graph(job["k"], job["n"], job["batch"], bits,
                                         job["group"], half=kind != "fp32")
    lut, _ = LutLowering("int8", target).run(graph)
    [entry] = json.loads(lut.metadata["etch.lut"])
    vm, arrays, _ = _lut_vm(graph, lut, entry, target, job["threads"])
    args = [tvm.runtime.tensor(a) for a in arrays.values()]
    xt = tvm.runtime.tensor(x)
    us, cpu = best_times(lambda: vm["main"](xt, *args), job["seconds"])
    return {"scales": entry.get("scales", "float32"), "lut_us": us, "lut_cpu_us": cpu,
            "lut_bytes": int(sum(a.nbytes for a in arrays.values())),
            "weight_rel_rms": _rel_rms(x, w_exact, w_float)}


def _etch_cold(vm, xt, arrays: dict, job: dict) -> tuple[float, float]:
    import tvm

    rng = np.random.default_rng(1)
    count = copies(sum(a.nbytes for a in arrays.values()), job["cold_mb"])
    sets = []
    for _ in range(count):
        sets.append([tvm.runtime.tensor(_shuffled(a, rng)) for a in arrays.values()])
    return cold_times([lambda s=s: vm["main"](xt, *s) for s in sets], job["seconds"])


def _shuffled(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of a with other values of the same kind (codes: any bytes; scales: permuted)."""
    if a.dtype == np.uint8:
        return rng.integers(0, 256, a.shape, dtype=np.uint8)
    return rng.permutation(a.reshape(-1)).reshape(a.shape)


# ---- ONNX Runtime ---------------------------------------------------------------------------
def _session(model, threads: int, lut: bool = False, spin: bool = True):
    """A CPU session; `spin` False stops idle worker threads spinning (the cold copies: a
    hundred idle sessions would otherwise keep the cores busy)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    if lut:
        so.add_session_config_entry("mlas.use_lut_gemm", "1")
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _float_model(k: int, n: int, batch: int):
    from models.gemv import build_gemv

    model = build_gemv(k, n, 1).model
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    return model


def _weight_bytes(model) -> int:
    return int(sum(np.prod(t.dims) * (4 if t.data_type == 1 else 1)
                   for t in model.graph.initializer))


def ort_job(job: dict) -> dict:
    """fp32 MatMul and every MatMulNBits configuration (warm; cold for `cold` ones)."""
    from models.nbits import quantize_nbits, set_accuracy_level

    k, n, batch, threads = job["k"], job["n"], job["batch"], job["threads"]
    x = {"input": np.random.default_rng(batch).standard_normal((batch, k)).astype(np.float32)}
    base = _float_model(k, n, batch)
    out = {"fp32": _timed(base, x, threads, False, job["seconds"])}
    out["fp32"].pop("y")
    for bits in (4, 2):
        for block in job["blocks"]:
            q = quantize_nbits(base, bits, block, 0)
            exact = _session(q, threads).run(None, x)[0].astype(np.float64)
            for acc in (4, 0):
                model = set_accuracy_level(q, acc)
                for lut in (False, True):
                    name = f"nbits{bits}_b{block}_acc{acc}_lut{int(lut)}"
                    if acc == 0 and bits == 2 and not lut and batch > 1 and job["skip_slow"]:
                        continue  # ORT's 2-bit float path: ~100x slower; timed at batch 1
                    row = _timed(model, x, threads, lut, job["seconds"])
                    y = row.pop("y")
                    row["rel_rms_vs_float"] = float(np.sqrt(((y - exact) ** 2).mean() /
                                                            (exact ** 2).mean()))
                    if name in job.get("cold", []) and job.get("cold_mb"):
                        row["cold_us"], row["cold_cpu_us"] = _ort_cold(model, x, threads,
                                                                       lut, job)
                    out[name] = row
    return out


def _timed(model, x: dict, threads: int, lut: bool, seconds: float) -> dict:
    """A session's warm time, weight bytes and output (the session is gone after)."""
    sess = _session(model, threads, lut)
    us, cpu = best_times(lambda: sess.run(None, x), seconds)
    return {"us": us, "cpu_us": cpu, "bytes": _weight_bytes(model), "y": sess.run(None, x)[0]}


def _ort_cold(model, x: dict, threads: int, lut: bool, job: dict) -> tuple[float, float]:
    import onnx.numpy_helper as nh

    rng = np.random.default_rng(2)
    count = copies(_weight_bytes(model), job["cold_mb"])
    sessions = []
    for _ in range(count):
        m = type(model)()
        m.CopyFrom(model)
        for t in m.graph.initializer:
            a = nh.to_array(t)
            t.CopyFrom(nh.from_array(_shuffled(a, rng), t.name))
        sessions.append(_session(m, threads, lut, spin=False))
    return cold_times([lambda s=s: s.run(None, x) for s in sessions], job["seconds"])


# ---- numpy and the stream bandwidth ------------------------------------------------------------
def numpy_job(job: dict) -> dict:
    from models.gemv import gemv_weight

    k, n, batch = job["k"], job["n"], job["batch"]
    w = gemv_weight(k, n)
    x = np.random.default_rng(batch).standard_normal((batch, k)).astype(np.float32)
    row = {"us": best_us(lambda: x @ w, job["seconds"]), "bytes": int(w.nbytes)}
    if job.get("cold_mb") and batch == 1:
        rng = np.random.default_rng(3)
        ws = [rng.permutation(w) for _ in range(copies(w.nbytes, job["cold_mb"]))]
        row["cold_us"], row["cold_cpu_us"] = cold_times([lambda v=v: x @ v for v in ws],
                                                        job["seconds"])
    return {"fp32": row}


def stream_job(job: dict) -> dict:
    """GB/s of a parallel int32 sum over `cold_mb` (vectorised, `threads` threads), and over
    `warm_mb` in a hot loop (the warm GEMV's bytes: what the caches deliver); the time of a
    compute-bound parallel kernel (`spin_us`: its 1-thread / all-threads ratio is the
    parallelism the machine gives this process now)."""
    import tvm

    cold_gbps = _stream_gbps(job["cold_mb"], job["seconds"])
    out = {"gbps": cold_gbps[0], "cpu_gbps": cold_gbps[1],
           "bytes": int(job["cold_mb"] * 2**20) // 16384 * 16384}
    if job.get("warm_mb"):
        out["warm_gbps"], out["warm_cpu_gbps"] = _stream_gbps(job["warm_mb"], job["seconds"])
        out["warm_bytes"] = int(job["warm_mb"] * 2**20) // 16384 * 16384
    lib = tvm.compile(_spin_kernel(), target=_host_target())
    a = tvm.runtime.tensor(np.ones((64, 16), np.float32))
    s = tvm.runtime.tensor(np.zeros((64, 16), np.float32))
    out["spin_us"], out["spin_cpu_us"] = best_times(lambda: lib(a, s), job["seconds"])
    return out


def _host_target():
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def _stream_gbps(mb: float, seconds: float) -> tuple[float, float]:
    """(wall, CPU) GB/s of a parallel int32 sum over `mb` MB (LLVM vectorises the rows)."""
    import tvm
    from tvm import te

    words = int(mb * 2**20) // 4 // 4096 * 4096
    a = te.placeholder((words // 4096, 4096), "int32", name="a")
    r = te.reduce_axis((0, 4096), "r")
    s = te.compute((words // 4096,), lambda i: te.sum(a[i, r], axis=r), name="s")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, s]))
    sch.parallel(sch.get_loops(sch.get_sblock("s"))[0])
    lib = tvm.compile(sch.mod, target=_host_target())
    buf = tvm.runtime.tensor(np.ones((words // 4096, 4096), np.int32))
    out = tvm.runtime.tensor(np.zeros(words // 4096, np.int32))
    wall, cpu = best_times(lambda: lib(buf, out), seconds)
    return words * 4 / wall / 1e3, words * 4 / cpu / 1e3


def _spin_kernel():
    """64 independent dependent-add chains, parallel over 64 rows: pure compute, no memory."""
    import tvm
    from tvm import te

    a = te.placeholder((64, 16), "float32", name="a")
    r = te.reduce_axis((0, 100000), "r")
    s = te.compute((64, 16), lambda i, j: te.sum(a[i, j] * 1.0000001 + r.astype("float32"),
                                                  axis=r), name="s")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, s]))
    sch.parallel(sch.get_loops(sch.get_sblock("s"))[0])
    return sch.mod


def model_job(job: dict) -> dict:
    from benchmarks.lut_models import model_job as run

    return run(job)


JOBS = {"etch": etch_job, "ort": ort_job, "numpy": numpy_job, "stream": stream_job,
        "model": model_job}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("TVM_NUM_THREADS", str(spec["threads"]))
    print(json.dumps(JOBS[spec["kind"]](spec)))
