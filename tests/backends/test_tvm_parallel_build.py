"""backends.tvm.parallel_build: cpu kernels built in parts on threads give the same library
from build to build and the same numbers as TVM's one-module build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import ir, relax

import compiler
from backends.tvm import builder, lower, parallel_build, schedules
from backends.tvm import target as targets
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from models import zoo


@pytest.fixture(scope="module")
def scheduled() -> tuple[ir.IRModule, tvm.target.Target, dict]:
    """mobilenet's scheduled module (a dozen distinct kernels), its target and inputs."""
    graph = onnx_import.import_model(str(zoo.model_path("mobilenet")))
    graph, _ = pipeline.run(graph, CompileOptions(target="cpu"))
    target_json, info = targets.cpu_target(CompileOptions(target="cpu"))
    target = tvm.target.Target(target_json)
    mod = lower.to_irmodule(graph, pack=True, lanes=info.lanes)
    return schedules.apply_rules(mod, target), target, zoo.load_sample("mobilenet")[0]


def test_split_deals_every_kernel_once_largest_first(scheduled) -> None:
    mod, _, _ = scheduled
    kernels = {g.name_hint for g, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    parts = parallel_build.split(mod)
    names = [g.name_hint for p in parts for g, _ in p.functions_items()]
    assert len(parts) == parallel_build.PARTS and sorted(names) == sorted(kernels)
    totals = [sum(parallel_build.size(f) for _, f in p.functions_items()) for p in parts]
    largest = max(parallel_build.size(f) for _, f in mod.functions_items()
                  if isinstance(f, tvm.tirx.PrimFunc))
    assert max(totals) - min(totals) <= largest  # greedy: no part over by more than one kernel
    again = parallel_build.split(mod)
    assert [sorted(g.name_hint for g, _ in p.functions_items()) for p in again] == \
        [sorted(g.name_hint for g, _ in p.functions_items()) for p in parts]
    assert len(parallel_build.split(mod, parts=100)) == len(kernels)


def _run(ex: relax.VMExecutable, path: Path, inputs: dict) -> np.ndarray:
    ex.export_library(str(path))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()]).numpy()


def test_parts_compute_what_one_module_computes(scheduled, tmp_path: Path) -> None:
    mod, target, inputs = scheduled
    config = builder.tir_config(target)
    with tvm.transform.PassContext(opt_level=3, config=config):
        whole = tvm.compile(mod, target=target, relax_pipeline=builder.vm_passes())
    parts = parallel_build.compile_parts(mod, target, builder.vm_passes(), config)
    np.testing.assert_array_equal(_run(parts, tmp_path / "parts.so", inputs),
                                  _run(whole, tmp_path / "whole.so", inputs))


def test_library_is_the_same_bytes_every_build() -> None:
    path = str(zoo.model_path("mobilenet"))
    first, second = (compiler.compile(path, target="cpu").manifest["files"] for _ in range(2))
    assert first == second and set(first) == {"model.so", "weights.bin"}


def test_export_on_threads_is_export_library(scheduled, tmp_path: Path) -> None:
    """`export` writes the parts' objects on threads and links them as TVM's
    `export_library` does: the same library, byte for byte."""
    mod, target, _ = scheduled
    ex = parallel_build.compile_parts(mod, target, builder.vm_passes(),
                                      builder.tir_config(target))
    assert len(ex.mod._collect_dso_modules()) == parallel_build.PARTS
    ex.export_library(str(tmp_path / "tvm.so"))
    parallel_build.export(ex, tmp_path / "etch.so")
    assert (tmp_path / "etch.so").read_bytes() == (tmp_path / "tvm.so").read_bytes()
