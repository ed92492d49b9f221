"""Build an IR graph into a TVM artifact: lower -> schedule -> (tune) -> compile -> export.

The Relax module arrives with every kernel already a scheduled PrimFunc, so the Relax
pipeline here skips TVM's legalisation and operator fusion (fusion is decided on the IR by
etch's pass and rendered as `etch.Fused`; FuseOps would merge scheduled kernels into new,
unscheduled ones) and keeps only the lowering to the VM: views for reshapes, static memory
planning, and the VM calling convention. Kernels that repeat (same TIR, another node) are
built once (`dedupe`). On cpu the large constants leave the library for `weights.bin`
(`weights`): `main` takes them after the graph inputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import tvm
from tvm import relax

from backends.tvm import lower, parallel_build, schedules, weights
from backends.tvm import target as targets
from backends.tvm.dedupe import dedupe
from backends.tvm.schedules import cpu as cpu_rules
from backends.tvm.support import error_line, storage
from compiler.errors import EtchError
from compiler.ir import Graph
from compiler.options import CompileOptions

LIBRARY = "model.so"


def vm_passes() -> tvm.transform.Pass:
    """Relax -> VM lowering for a module whose kernels are all scheduled TIR."""
    t = relax.transform
    return tvm.transform.Sequential([
        t.RewriteDataflowReshape(), t.ToNonDataflow(), t.RemovePurityChecking(),
        t.CallTIRRewrite(), t.StaticPlanBlockMemory(), t.LowerAllocTensor(),
        t.KillAfterLastUse(), t.LowerRuntimeBuiltin(), t.ComputePrimValue(),
        t.VMShapeLower(), t.AttachGlobalSymbol(),
    ], name="etch_vm_lowering")


def kernel_count(mod: tvm.IRModule) -> int:
    return sum(1 for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def tir_config(target: tvm.target.Target) -> dict:
    """PassContext settings of the TIR build. On CPUs TIR's common-subexpression pass is off:
    LLVM's own (GVN, LICM) finds the same, and on etch's unrolled register tiles the TIR pass
    was the most expensive step of a build. Measured on the AVX-512 Xeon, one thread: vgg16's
    build 47 -> 35 s wall (the pass alone was 62% of the TIR pipeline), inception_v3 21 ->
    18 s, resnet50 9.5 -> 7.8 s; the models' latency unchanged (73.7/73.3 ms, 178.8/178.4 ms,
    15.2/14.8 ms efficientnet_b0, 254.0/254.2 ms vit_b16)."""
    return {"tirx.disable_cse_tir": True} if target.kind.name == "llvm" else {}


def compile_module(mod: tvm.IRModule, target: tvm.target.Target, out: Path) -> None:
    """Compile a scheduled module and export it as out/model.so (cpu: the kernels built in
    parts on threads, `parallel_build`)."""
    try:
        if target.kind.name == "llvm":
            ex = parallel_build.compile_parts(mod, target, vm_passes(), tir_config(target))
            parallel_build.export(ex, out / LIBRARY)
        else:
            with tvm.transform.PassContext(opt_level=3, config=tir_config(target)):
                ex = tvm.compile(mod, target=target, relax_pipeline=vm_passes())
            ex.export_library(str(out / LIBRARY))
    except Exception as e:  # TVM's report ends with the line that says what failed
        raise EtchError(f"the TVM backend cannot compile the model: {error_line(e)}") from e


def lowered(graph: Graph, *, pack: bool, lanes: int) -> tuple[tvm.IRModule, dict]:
    """The graph's Relax module, each distinct kernel once; the manifest entry saying how
    many repeated kernels were dropped."""
    mod, repeats = dedupe(lower.to_irmodule(graph, pack=pack, lanes=lanes))
    return mod, {"repeated_kernels": repeats}


def storage_entries(graph: Graph) -> dict:
    """Manifest entries naming the inputs/outputs whose element type TVM holds in a wider
    one (int4 in int8, float8 in float32, ...): the executor converts those at the edge."""
    names = [*graph.inputs, *graph.outputs]
    held = {n: storage(graph.values[n].dtype) for n in names
            if storage(graph.values[n].dtype) != graph.values[n].dtype}
    return {"storage_dtypes": held} if held else {}


def build_cpu(graph: Graph, opts: CompileOptions, out: Path) -> dict:
    """The cpu artifact: AVX2/AVX-512 kernels for the detected (or named) CPU."""
    target_json, info = targets.cpu_target(opts)
    target = tvm.target.Target(target_json)
    t0 = time.perf_counter()
    mod, repeats = lowered(graph, pack=True, lanes=info.lanes)
    mod, tuning = _maybe_tune(mod, target, opts, out)
    mod = schedules.apply_rules(mod, target)
    mod, consts = weights.detach(mod)
    t1 = time.perf_counter()
    compile_module(mod, target, out)
    stored = {"weights": weights.write(consts, out)} if consts else {}
    return {**tuning, **repeats, **storage_entries(graph), **stored, "runtime": "tvm",
            "device": "cpu", "library": LIBRARY, "entry": "main",
            "tvm_target": target_json, "cpu": info.mcpu, "cpu_features": list(info.features),
            "cpu_isa": list(info.isa),
            "vector_bits": info.vector_bits, "vector_lanes": info.lanes, "threads": opts.threads,
            "kernels": kernel_count(mod), "schedules": schedules.rule_names(mod),
            "explain": schedules.explain_lines(mod),
            "build_seconds": {"lower_schedule": round(t1 - t0, 3),
                              "compile": round(time.perf_counter() - t1, 3)}}


def build_cuda(graph: Graph, opts: CompileOptions, out: Path) -> dict:
    """The cuda artifact: dlight-scheduled kernels, built with nvcc (no GPU needed)."""
    target_json = targets.cuda_target(opts)
    target = tvm.target.Target(target_json)
    # plain layouts and reductions for dlight
    mod, repeats = lowered(graph, pack=False, lanes=1)
    mod, tuning = _maybe_tune(mod, target, opts, out)
    mod = schedules.apply_rules(mod, target)
    compile_module(mod, target, out)
    return {**tuning, **repeats, **storage_entries(graph), "runtime": "tvm", "device": "cuda",
            "library": LIBRARY, "entry": "main",
            "tvm_target": target_json, "kernels": kernel_count(mod),
            "schedules": schedules.rule_names(mod)}


def _maybe_tune(mod: tvm.IRModule, target: tvm.target.Target, opts: CompileOptions,
                out: Path) -> tuple[tvm.IRModule, dict]:
    """MetaSchedule with opts.tune trials (cached by content), or `mod` unchanged; with the
    manifest entries ({"tuning": {...}} when tuned)."""
    if not opts.tune:
        return mod, {}
    from backends.tvm import tune

    mod, info = tune.tune(mod, target, opts.tune, out, tir_config(target))
    return mod, {"tuning": info}


def build_edge_target(graph: Graph, opts: CompileOptions, out: Path) -> dict:
    """The edge artifact: aarch64 (NEON) cross-compiled; the runner's plan for qemu."""
    from backends.tvm import edge

    # the cpu rules schedule for the aarch64 target (NEON: 4 float lanes), and the edge
    # pipeline leaves kernels they scheduled alone (dlight handles the rest).
    held = storage_entries(graph).get("storage_dtypes", {})
    if held:
        kinds = sorted({graph.values[n].dtype for n in held})
        raise EtchError(f"edge artifacts take and return native element types only; this "
                        f"model's inputs/outputs are {', '.join(kinds)} (the cpu target "
                        f"runs it)")
    target = tvm.target.Target(edge.edge_target(opts.mcpu))
    lanes = cpu_rules.lanes(target)
    mod, repeats = lowered(graph, pack=True, lanes=lanes)
    mod = schedules.apply_rules(mod, target)
    entries = edge.build_edge(mod, out, mcpu=opts.mcpu)
    return {**entries, **repeats, "entry": "main", "kernels": kernel_count(mod),
            "explain": schedules.explain_lines(mod)}


def build(graph: Graph, opts: CompileOptions, out: Path) -> dict:
    """backends.tvm's entry: build `graph` for opts.target into `out`, return manifest entries."""
    if opts.target == "edge":
        return build_edge_target(graph, opts, out)
    if opts.target == "cpu":
        return build_cpu(graph, opts, out)
    if opts.target == "cuda":
        return build_cuda(graph, opts, out)
    raise EtchError(f"the TVM backend builds cpu, cuda and edge, not {opts.target!r}")
