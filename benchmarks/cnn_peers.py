"""The runtimes of `etch bench cnn`: how each is built once and then timed.

Every runtime is built once per (model, batch) into a directory of its own (`build`), in a
process of its own, and timed per thread count in fresh processes (`load`), since a thread
pool's size is fixed when it first runs:
- etch / etch_int: `compiler.compile(path, target="cpu")` (with `bits=8, int=True` and the
  sample as calibration for etch_int), saved as an artifact; threads from TVM_NUM_THREADS;
- etch_tuned: etch float with `--tune N` (MetaSchedule, N trials from $ETCH_BENCH_TUNE_TRIALS,
  default 64; its database cached by content, so a second run reuses it);
- ort: CPUExecutionProvider, all graph optimisations (its default), intra-op threads;
- ort_qdq / ort_qop: the model quantised by `onnxruntime.quantization.quantize_static`
  (per-channel int8 weights, uint8 activations, MinMax over the sample) in QDQ and in
  QOperator format; the table shows the faster of the two as "ORT int8";
- ort_qdq_noamx / ort_qop_noamx: the same quantised models, timed in a process that may not
  use AMX tiles (`deny_amx`): on a CPU with AMX-INT8, ORT's int8 GEMMs use it, 2.7x VNNI's
  speed on a 256^3 MatMulInteger on the Xeon the README's tables ran on; these rows are ORT on
  the VNNI kernels, the "VNNI host" of issue 13's int8 goal (elsewhere they equal ort_qdq/qop);
- tvm_fe: `tvm.relax.frontend.onnx.from_onnx` and `tvm.compile` with TVM's default
  pipeline (no tuning), exported as a library and run by the Relax VM.
Batch B > 1 runs a copy of the model whose input and batch-leading Reshape shapes say B
(`batched_model`): the zoo's exports fix batch 1.
"""

from __future__ import annotations

import ctypes
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Runner = Callable[[], object]
ETCH = ("etch", "etch_int")
RUNTIMES = ("etch", "etch_int", "ort", "ort_qdq", "ort_qop", "ort_qdq_noamx", "ort_qop_noamx",
            "tvm_fe", "etch_tuned")
DEFAULT_RUNTIMES = RUNTIMES[:-1]    # etch_tuned measures minutes per model: asked for by name
TUNE_TRIALS = "ETCH_BENCH_TUNE_TRIALS"  # environment: etch_tuned's trials (default 64)
NO_AMX = "_noamx"


def batched_model(src: Path, batch: int, dest: Path) -> None:
    """Write `src` with batch `batch`: the input's first dim, the leading 1 of every
    constant Reshape shape (the zoo's exports flatten as [1, ...]) and every constant with a
    leading 1 that a Concat joins along another axis (a ViT's class token, folded into an
    initializer of shape [1, 1, d] by the export) repeated `batch` times; inferred shapes
    dropped."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    del graph.value_info[:]
    shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in shapes:
            data = numpy_helper.to_array(init).copy()
            if data.size and data[0] == 1:
                data[0] = batch
                init.CopyFrom(numpy_helper.from_array(data, init.name))
    _repeat_concat_constants(graph, batch)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in shapes:
            data = numpy_helper.to_array(node.attribute[0].t).copy()
            if data.size and data[0] == 1:
                data[0] = batch
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(data))
    onnx.save(model, str(dest))


def _repeat_concat_constants(graph: object, batch: int) -> None:
    """Initializers with a leading 1 joined by a Concat on a non-batch axis, repeated to
    `batch` along axis 0 (the other Concat inputs carry the batch)."""
    from onnx import numpy_helper

    joined = set()
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type == "Concat" and axis != 0:
            joined.update(node.input)
    for init in graph.initializer:
        if init.name in joined and len(init.dims) > 1 and init.dims[0] == 1:
            data = np.repeat(numpy_helper.to_array(init), batch, axis=0)
            init.CopyFrom(numpy_helper.from_array(data, init.name))


def batched_inputs(sample: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The sample repeated along the batch axis, each copy slightly different."""
    rng = np.random.default_rng(batch)
    return {k: np.concatenate([v] + [(v + rng.normal(0, 0.1, v.shape) * v.std()).astype(v.dtype)
                                     for _ in range(batch - 1)]) for k, v in sample.items()}


def build(runtime: str, model: Path, inputs: dict[str, np.ndarray], out: Path) -> dict:
    """Build `runtime` for `model` into directory `out`; returns {"compile_s": ...}."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    extra = BUILDERS[runtime](model, inputs, out) or {}
    return {"compile_s": round(time.perf_counter() - t0, 2), **extra}


def _build_etch(model: Path, inputs: dict, out: Path, **opts) -> dict:
    import compiler

    art = compiler.compile(str(model), target="cpu", **opts)
    art.save(out / "artifact")
    return {"schedules": art.manifest.get("schedules"), "algorithms": _algorithms(art)}


def _algorithms(art) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    for node in art.graph.nodes if art.graph is not None else []:
        algo = node.attrs.get("conv_algorithm")
        if algo:
            counts[algo] = counts.get(algo, 0) + 1
    return counts or None


def _build_etch_tuned(model: Path, inputs: dict, out: Path) -> dict:
    import os

    trials = int(os.environ.get(TUNE_TRIALS, "64"))
    return {**_build_etch(model, inputs, out, tune=trials), "trials": trials}


def _build_etch_int(model: Path, inputs: dict, out: Path) -> dict:
    calib = out / "calib.npz"
    np.savez(calib, **inputs)
    return _build_etch(model, inputs, out, bits=8, int=True, calib=str(calib))


def _build_ort(model: Path, inputs: dict, out: Path) -> None:
    (out / "model.onnx").symlink_to(model.resolve())


def _quantize(model: Path, inputs: dict, out: Path, fmt: str) -> None:
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([inputs])

        def get_next(self):
            return next(self.items, None)

    q.quantize_static(str(model), str(out / "model.onnx"), Reader(),
                      quant_format=q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator,
                      per_channel=True, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8)


def _build_tvm_fe(model: Path, inputs: dict, out: Path) -> None:
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(model)), keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm",
                                "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    tvm.compile(mod, target=target).export_library(str(out / "model.so"))


BUILDERS: dict[str, Callable[..., dict | None]] = {
    "etch": _build_etch, "etch_int": _build_etch_int, "etch_tuned": _build_etch_tuned,
    "ort": _build_ort,
    "ort_qdq": lambda m, i, o: _quantize(m, i, o, "qdq"),
    "ort_qop": lambda m, i, o: _quantize(m, i, o, "qop"),
    "ort_qdq_noamx": lambda m, i, o: _quantize(m, i, o, "qdq"),
    "ort_qop_noamx": lambda m, i, o: _quantize(m, i, o, "qop"),
    "tvm_fe": _build_tvm_fe,
}


def load(runtime: str, built: Path, inputs: dict, threads: int) -> Runner:
    """A call that runs the built `runtime` once on `inputs` with `threads` threads."""
    if runtime in ETCH or runtime == "etch_tuned":
        import runtime as etch_runtime

        art = etch_runtime.load(built / "artifact")
        return lambda: art.run(inputs)
    if runtime == "tvm_fe":
        return _load_tvm_fe(built, inputs)
    if runtime.endswith(NO_AMX) and not deny_amx():
        raise RuntimeError("cannot deny AMX to this process (seccomp unavailable)")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(built / "model.onnx"), so,
                                providers=["CPUExecutionProvider"])
    return lambda: dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))


def deny_amx() -> bool:
    """Make this process's request for AMX tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, which
    Linux requires before a first AMX instruction) fail with EPERM, by a seccomp filter that
    allows every other call; libraries then fall back to their VNNI kernels. Irreversible for
    the process: call it in a fresh worker before a library asks. False off x86-64 Linux or
    where seccomp is unavailable (True on a CPU without AMX, where nothing changes)."""
    import platform

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    ld, jeq, ret = 0x20, 0x15, 0x06                    # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    audit_x86_64, nr_arch_prctl, req_xcomp_perm = 0xC000003E, 158, 0x1023
    program = [(ld, 0, 0, 4), (jeq, 0, 4, audit_x86_64),           # seccomp_data.arch
               (ld, 0, 0, 0), (jeq, 0, 2, nr_arch_prctl),           # .nr
               (ld, 0, 0, 16), (jeq, 1, 0, req_xcomp_perm),         # .args[0]
               (ret, 0, 0, 0x7FFF0000),                             # SECCOMP_RET_ALLOW
               (ret, 0, 0, 0x00050000 | 1)]                         # SECCOMP_RET_ERRNO | EPERM
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *f) for f in program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.cast(code, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    return (libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) == 0
            and libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) == 0)


def _load_tvm_fe(built: Path, inputs: dict) -> Runner:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(built / "model.so")), tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in inputs.values()]

    def run() -> object:
        out = vm["main"](*args)
        return out.numpy() if hasattr(out, "numpy") else [o.numpy() for o in out]

    return run


def latency_us(fn: Runner, seconds: float, rounds: int = 5) -> float:
    """The best of up to `rounds` rounds' mean latency per call (microseconds), each round
    about `seconds` long; a slow runtime gets fewer rounds (at least two), so one model's
    slowest peer costs seconds, not minutes."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    calls = max(1, int(seconds / max(once, 1e-9)))
    rounds = max(2, min(rounds, int(6 * seconds / max(once * calls, 1e-9))))
    best = once * 1e6
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best
