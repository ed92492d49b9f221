"""Build a scheduled cpu module's kernels in parts, on threads: `tvm.compile` with the TIR
build split.

`tvm.compile` lowers and compiles every kernel in one TIR module, on one thread: the TIR
pipeline (simplification after unrolling) and LLVM's optimisation of each kernel, most of a
large model's compile (vgg16: 19 s CPU, 5 Winograd kernels 95% of it). Kernels are
independent functions, so here the Relax part is lowered as `relax.build` does (the VM
passes, VM code generation), the kernels are dealt into PARTS modules by an estimate of their
size (largest first, each to the lightest part: the split depends only on the module, never
on the machine), each part is built by `tvm.tirx.build` on its own thread (TVM releases the
GIL; the PassContext, thread-local, is entered on each thread), and the parts are linked
into the VM executable as one library with the others imported. `export` writes the parts'
object files on threads too (LLVM's code generation runs when an object is written: half of
densenet121's build was that, on one thread) and links them as `export_library` does. The
exported `model.so` is the same bytes from build to build, and computes what the one-part
build computes (each kernel is the same function compiled with the same passes).
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tvm
from tvm import ir, relax, tirx
from tvm.relax import vm_build

from backends.tvm import strided_loads

PARTS = 4  # modules the kernels are dealt into (threads: at most the CPUs this process has)


def size(func: tirx.PrimFunc) -> int:
    """The split's cost estimate of a kernel: the length of its serialised TIR (vgg16: 0.14 s
    for all 18 kernels)."""
    return len(tvm.ir.save_json(func))


def split(mod: ir.IRModule, parts: int = PARTS) -> list[ir.IRModule]:
    """The PrimFuncs of `mod` dealt into at most `parts` modules of similar total size: the
    largest first, each to the part with the least so far (ties: the lower index)."""
    funcs = sorted(((size(f), g.name_hint, g, f) for g, f in mod.functions_items()
                    if isinstance(f, tirx.PrimFunc)), key=lambda t: (-t[0], t[1]))
    bins: list[tuple[int, dict]] = [(0, {}) for _ in range(min(parts, len(funcs)))]
    for cost, _, gvar, func in funcs:
        k = min(range(len(bins)), key=lambda i: (bins[i][0], i))
        bins[k] = (bins[k][0] + cost, {**bins[k][1], gvar: func})
    return [ir.IRModule(b, attrs=mod.attrs) for _, b in bins if b]


def threads() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(PARTS, cpus or 1))


def compile_parts(mod: ir.IRModule, target: tvm.target.Target, relax_passes: tvm.transform.Pass,
                  config: dict) -> relax.VMExecutable:
    """What `tvm.compile(mod, target, relax_pipeline=relax_passes)` returns, with the kernels
    built in `split` parts on `threads()` threads."""
    with tvm.transform.PassContext(opt_level=3, config=config):
        with target:
            mod = relax_passes(mod)
        attrs = dict(mod.attrs) if mod.attrs else {}
        ext_libs = list(attrs.get("external_mods", []))
        params = dict(attrs.get("const_name_to_constant", {}))
        builder = relax.ExecBuilder()
        mod = vm_build._vmcodegen(builder, mod)
    kernels = vm_build._filter_tir(mod)
    if kernels is None:
        return vm_build._vmlink(builder, target, None, ext_libs=ext_libs, params=params)

    def build(part: ir.IRModule) -> tvm.runtime.Module:
        with tvm.transform.PassContext(opt_level=3, config=config):
            return tvm.tirx.build(part, target=target, pipeline=strided_loads.PIPELINE)

    with ThreadPoolExecutor(max_workers=threads()) as pool:
        libs = list(pool.map(build, split(kernels)))
    lib = libs[0]
    for other in libs[1:]:
        lib.import_module(other)
    return relax.VMExecutable(vm_build._ffi_api.VMLink(builder, target, lib, ext_libs, params))


def export(ex: relax.VMExecutable, path: Path) -> None:
    """`ex.export_library(path)` with every object file written on its own thread (TVM
    releases the GIL; the objects are the same bytes either way): the llvm modules' objects,
    the import tree packed as TVM packs it, linked by TVM's `create_shared`. Anything but an
    all-llvm module tree goes through `export_library` itself."""
    from tvm.runtime import _ffi_api
    from tvm.support import cc

    mod = ex.mod
    modules = mod._collect_dso_modules()
    if len(modules) < 2 or any(m.kind != "llvm" for m in modules):
        ex.export_library(str(path))
        return
    with tempfile.TemporaryDirectory(prefix="etch-export-") as tmp:
        files = [os.path.join(tmp, f"lib{i}.o") for i in range(len(modules))]
        with ThreadPoolExecutor(max_workers=threads()) as pool:
            list(pool.map(lambda m, f: m.write_to_file(f), modules, files))
        if mod.imports:  # the import tree, as export_library packs it (its last llvm module's)
            last = modules[-1]
            prefix = last.get_function("__tvm_get_system_lib_prefix")() or ""
            packed = _ffi_api.ModulePackImportsToLLVM(
                mod, last.get_function("__tvm_is_system_module")(),
                last.get_function("_get_target_string")(), prefix)
            files.append(os.path.join(tmp, f"{prefix}devc.o"))
            packed.write_to_file(files[-1])
        cc.create_shared(str(path), files)
