"""The `edge` target: cross-compile a Relax module for aarch64 Linux (NEON).

`build_edge(mod, out_dir)` writes into `out_dir`:
- `model.so`: the deployable library. LLVM generates aarch64 code (mtriple
  aarch64-linux-gnu, +neon) and `export_library` links it with `aarch64-linux-gnu-g++`. On
  a board it is run the standard TVM way, over RPC (`etch run OUT --rpc HOST:PORT`: upload,
  load remotely, Relax VM on the remote CPU); see `runtime/edge_executor.py`.
- `edge_runner`, `edge_plan.txt`, `edge_consts.bin`: a standalone aarch64 program that runs
  the same `model.so` kernels without a TVM runtime, in the order the Relax VM would (see
  `edge_plan.py` and `edge_runner.c`). This is how an edge artifact runs on an x86 machine:
  under `qemu-aarch64`, which is what `etch run OUT` does without `--rpc`.

What is tested here (tests/backends/test_edge.py): both. The standalone runner under
qemu-aarch64 always (it needs only the cross compiler and qemu-user); the RPC path against
`edge_rpc_server` (`edge_rpc.py`: a small TVM RPC server linked against the aarch64 TVM
runtime from PyPI's manylinux aarch64 wheels) started under qemu-aarch64 on 127.0.0.1,
when that runtime could be fetched.

Limits of the standalone runner: static shapes only; kernels run on one thread (parallel
loops run as one task); a kernel that calls another packed function (an external library)
fails with a message, and a Relax `main` with anything but kernel calls, allocations,
reshapes and tuples is not planned (`edge_runner` is null in the manifest, with the reason
in `edge_runner_unsupported`): such artifacts still run over RPC.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi.libinfo
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import dlight
from tvm.support import cc

from backends.tvm import edge_plan
from compiler.errors import EtchError

MTRIPLE = "aarch64-linux-gnu"
CROSS_CC = f"{MTRIPLE}-gcc"
CROSS_CXX = f"{MTRIPLE}-g++"
RUNNER_SOURCE = Path(__file__).with_name("edge_runner.c")


def edge_target(mcpu: str | None = None) -> dict:
    """The TVM target (JSON dict) for aarch64 Linux with NEON, optionally for one `mcpu`."""
    target = {"kind": "llvm", "mtriple": MTRIPLE, "mattr": ["+neon"]}
    if mcpu:
        target["mcpu"] = mcpu
    return target


def cross_tool(name: str) -> str:
    """The path of cross tool `name`; EtchError saying how to install it if it is missing."""
    path = shutil.which(name)
    if path is None:
        raise EtchError(f"the edge target needs the aarch64 cross compiler {name} "
                        f"(Debian: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)")
    return path


def default_schedules() -> tvm.transform.Pass:
    """dlight's CPU rules for PrimFuncs not already scheduled (`tirx.is_scheduled`)."""
    return dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())


def check_no_foreign_target(mod: tvm.IRModule) -> None:
    """ValueError if a PrimFunc of `mod` is bound to a target other than aarch64 Linux
    (TVM builds a PrimFunc for its own "target" attribute, whatever `build` is given)."""
    for gvar, func in mod.functions_items():
        target = func.attrs.get("target") if isinstance(func, tvm.tirx.PrimFunc) else None
        if target is not None and target.attrs.get("mtriple", "") != MTRIPLE:
            raise ValueError(f"PrimFunc {gvar.name_hint} is bound to target {target}; "
                             f"the edge target builds for {MTRIPLE}")


OPAQUE = 8  # relay/relax OpPatternKind kOpaque: FuseOps leaves such a PrimFunc alone


def keep_scheduled(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with its already scheduled PrimFuncs (`tirx.is_scheduled`) marked opaque, so
    that fusion does not merge them into new, unscheduled PrimFuncs."""
    mod = mod.clone()
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc) and func.attrs.get("tirx.is_scheduled"):
            mod[gvar] = func.with_attr("op_pattern", OPAQUE)
    return mod


def lower(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """`mod` through TVM's CPU pipeline, with default schedules, to VM-ready Relax + TIR.

    PrimFuncs the caller scheduled are kept as they are (see `keep_scheduled`); the others
    are fused and get dlight's CPU schedules. The same lowered module feeds `relax.build` (model.so) and the plan extraction, so the
    plan's kernel names are the library's symbols.
    """
    passes = (cpu_pipeline.library_dispatch_passes(target)
              + cpu_pipeline.legalize_passes(target)
              + [default_schedules()]
              + cpu_pipeline.dataflow_lower_passes(target)
              + cpu_pipeline.finalize_passes(target))
    with target:
        return tvm.transform.Sequential(passes)(keep_scheduled(mod))


def bind_params(mod: tvm.IRModule, params: dict[str, np.ndarray] | None) -> tvm.IRModule:
    """`mod` with `params` (by parameter name of "main") bound as constants."""
    if not params:
        return mod
    names = {p.name for p in mod["main"].params}
    unknown = sorted(set(params) - names)
    if unknown:
        raise EtchError(f"params {unknown} are not parameters of main ({sorted(names)})")
    return relax.transform.BindParams("main", {k: np.asarray(v) for k, v in params.items()})(mod)


def export_model(lowered: tvm.IRModule, target: tvm.target.Target, path: Path) -> None:
    """Build the VM executable of `lowered` and link it for aarch64 into `path`."""
    executable = relax.build(lowered, target, relax_pipeline=None)
    executable.export_library(str(path), fcompile=cc.cross_compiler(cross_tool(CROSS_CXX)))


def compile_runner(path: Path) -> None:
    """Compile `edge_runner.c` for aarch64 into `path` (-rdynamic: model.so binds to it)."""
    includes = {tvm_ffi.libinfo.find_include_path(), tvm_ffi.libinfo.find_dlpack_include_path()}
    cmd = [cross_tool(CROSS_CC), "-O2", "-std=c11", "-Wall", *[f"-I{i}" for i in sorted(includes)],
           str(RUNNER_SOURCE), "-o", str(path), "-rdynamic", "-ldl", "-lm"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the edge runner failed:\n{proc.stderr}")


def write_runner(lowered: tvm.IRModule, out_dir: Path) -> dict:
    """The standalone runner files in `out_dir`, and their manifest entries."""
    try:
        plan = edge_plan.extract_plan(lowered)
    except edge_plan.Unsupported as e:
        return {"edge_runner": None, "edge_runner_unsupported": str(e)}
    (out_dir / "edge_plan.txt").write_text(plan.text())
    (out_dir / "edge_consts.bin").write_bytes(bytes(plan.consts))
    compile_runner(out_dir / "edge_runner")
    return {"edge_runner": "edge_runner", "edge_plan": "edge_plan.txt",
            "edge_consts": "edge_consts.bin",
            "edge_io": {"inputs": plan.inputs, "outputs": plan.outputs,
                        "input_offsets": plan.input_offsets}}


def build_edge(mod: tvm.IRModule, out_dir: Path, *, mcpu: str | None = None,
               params: dict[str, np.ndarray] | None = None) -> dict:
    """Cross-compile Relax module `mod` for aarch64 into `out_dir`; return manifest entries.

    `mod["main"]` takes the model inputs (in the manifest's order) and any of `params`, which
    are bound as constants; it returns a tensor or a (nested) tuple of tensors, flattened in
    order into the manifest's outputs. Entries: runtime, device, library, edge_runner (a
    file name, or None with edge_runner_unsupported saying why), target (JSON dict), and the
    runner's plan files. EtchError if the cross compiler is missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target_json = edge_target(mcpu)
    target = tvm.target.Target(target_json)
    check_no_foreign_target(mod)
    lowered = lower(bind_params(mod, params), target)
    export_model(lowered, target, out_dir / "model.so")
    return {"runtime": "tvm", "device": "edge", "library": "model.so", "tvm_target": target_json,
            "cross_compiler": CROSS_CXX, **write_runner(lowered, out_dir)}
