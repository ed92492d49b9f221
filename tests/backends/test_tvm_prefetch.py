"""`backends.tvm.prefetch`: the pointwise GEMMs whose position (or column) blocks share a
weight block, and the channel-vector direct convs whose rows share a chunk, prefetch the
next one in memory, spread over those blocks, as the schedule records (`etch.prefetch`);
every prefetch lies in the weight, the values are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from onnx import helper
from tvm import ir, sym, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

import compiler
from backends.tvm import lower, prefetch, schedules
from backends.tvm import target as targets
from compiler import onnx_import, pipeline
from compiler.options import CompileOptions
from tests.backends import isa
from tests.golden import RandomInits, run_ort


def _model():
    """resnet50's 1x1 layers, smaller: 256->128 on 14x14 (channel-vector GEMM, reduction in
    chunks) and 64->32 on 28x28 (positions as the vector), and a stride-2 3x3 128->32 on
    14x14 (the channel-vector direct convolution)."""
    init = RandomInits(31)
    return init.model("pointwise", [
        helper.make_node("Conv", ["x", init.weight("w", 128, 256, 1, 1), init.bias("b", 128)],
                         ["y"]),
        helper.make_node("Conv", ["v", init.weight("wv", 32, 64, 1, 1)], ["z"]),
        helper.make_node("Conv", ["s", init.weight("ws", 32, 128, 3, 3)], ["t"],
                         strides=[2, 2], pads=[1, 1, 1, 1])],
        {"x": [1, 256, 14, 14], "v": [1, 64, 28, 28], "s": [1, 128, 14, 14]}, ["y", "z", "t"])


# The AVX-512 CPU named for the schedules: Zen 5, two 512-bit FMAs a cycle, so the positions'
# GEMM tiles two vectors and shares each weight block over its column blocks. (On Zen 4 the
# 64->32 layer's one-vector tiles run few channel blocks with their column blocks in one
# loop, `conv_gemm_cpu`, whose weight blocks are too small to stream: no prefetch there.)
NAMED = "znver5"


def _graph():
    """The model through the cpu pipeline's passes for the NAMED CPU (whatever the host)."""
    return pipeline.run(onnx_import.import_model(_model()[0]),
                        CompileOptions(target="cpu", mcpu=NAMED))[0]


def _kernels() -> dict:
    """The model's scheduled kernels by `etch.kind`, built for the NAMED AVX-512 CPU."""
    opts = CompileOptions(target="cpu", mcpu=NAMED, threads=1)
    target = tvm.target.Target(targets.cpu_target(opts)[0])
    mod = schedules.apply_rules(lower.to_irmodule(_graph(), pack=True, lanes=16), target)
    return {str(f.attrs["etch.kind"]): f for _, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and "etch.kind" in f.attrs}


def _chunked(annotations: dict) -> tirx.PrimFunc:
    """out[p] += a[c * 256 + k] over 4 chunks c, 8 blocks p, 16 steps k: the block loop
    carries `annotations`."""
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        a = T.arg("a", T.buffer((1024,), "float32"))
        out = T.arg("out", T.buffer((8,), "float32"))
        with T.serial(0, 4) as c, T.serial(0, 8, annotations=annotations) as p, \
                T.serial(0, 16) as k:
            T.buffer_store(out, out[p] + a[c * 256 + k], [p])
    return ib.get()


def _calls(func: tirx.PrimFunc) -> list:
    """(index expression, [loop vars]) of every llvm.prefetch in `func`."""
    found = []

    def call(c):
        if len(c.args) == 5 and isinstance(c.args[1], ir.Call):
            found.append(c.args[1].args[0].indices[0])
        return c

    tvm_ffi.structural_map(func.body, [(ir.expr.Call, call)])
    return found


def _substitute(e: tirx.Expr, values: dict) -> tirx.Expr:
    return tvm_ffi.structural_map(e, [(ir.expr.Var, lambda v: values.get(v, v))])


def _annotated(func: tirx.PrimFunc) -> list:
    found = []

    def loop(f):
        if prefetch.KEY in f.annotations:
            found.append(f)
        return f

    tvm_ffi.structural_map(func.body, [(tirx.For, loop)])
    return found


def test_each_block_prefetches_its_share_of_the_next_chunk() -> None:
    """256 floats (16 lines) ahead over 8 blocks: block p of chunk c hints lines 2p and
    2p + 1 of chunk c + 1, clamped inside the buffer (the last chunk's hints stay at its
    last element); no annotation is left."""
    func = _chunked({prefetch.KEY: ["a", 256]})
    out = prefetch.prefetch(tvm.IRModule({"main": func}))["main"]
    assert prefetch.KEY not in out.script()
    calls = _calls(out)
    assert len(calls) == 2
    loops = {}

    def loop(f):
        loops[{4: "c", 8: "p", 16: "k"}[int(f.extent)]] = f.loop_var
        return f

    tvm_ffi.structural_map(out.body, [(tirx.For, loop)])
    analyzer = sym.Analyzer()
    for c in range(4):
        for p in range(8):
            values = {loops["c"]: tirx.const(c, "int32"), loops["p"]: tirx.const(p, "int32")}
            got = [int(analyzer.simplify(_substitute(e, values)).value) for e in calls]
            want = [min((c + 1) * 256 + (2 * p + j) * 16, 1023) for j in range(2)]
            assert got == want, (c, p)


def test_a_loop_without_the_buffer_is_left_alone() -> None:
    func = _chunked({prefetch.KEY: ["b", 256]})
    out = prefetch.prefetch(tvm.IRModule({"main": func}))["main"]
    assert not _calls(out) and prefetch.KEY not in out.script()


@pytest.mark.parametrize("kind, steps", [("conv_channels", 64), ("conv_gemm", 64),
                                         ("conv_channels_direct", 0)])
def test_the_next_weight_block_is_prefetched_over_the_blocks_sharing_one(kind: str,
                                                                          steps: int) -> None:
    """The schedule annotates the loop over the blocks that share a weight chunk (64 of the
    256 reduction steps, the channel-vector GEMM) or block (all 64 steps, positions as the
    vector) with that many steps' weights; the pass turns it into prefetches of one line
    each, spread over the loop's iterations (`test_each_block_prefetches_its_share_of_the_
    next_chunk`), in the kernel's assembly; `--explain`'s note says so."""
    func = _kernels()[kind]
    loops = _annotated(func)  # the direct conv's rows: a loop per row group's piece
    assert loops and len({str(f.annotations[prefetch.KEY]) for f in loops}) == 1
    loop = loops[0]
    channels = int(func.attrs["etch.ocb" if kind == "conv_gemm" else "etch.ocv"])
    elements = int(loop.annotations[prefetch.KEY][1])
    if steps:
        assert elements == steps * channels
    else:  # the direct conv's chunk of input channels, each with its 3x3 taps
        assert elements % (9 * channels) == 0
    assert "prefetched" in str(func.attrs["etch.tile"])
    asm = isa.compile_graph(_graph(), "znver4").of_kind(kind)
    [code] = asm.values()
    per = -(-(elements * 4 // 64) // int(loop.extent))
    if steps:  # one loop: exactly its share an iteration
        assert code.count("prefetcht0") == per, code
    else:  # a short row loop LLVM may unroll or peel: its share at least
        assert code.count("prefetcht0") >= per, code


def test_the_prefetches_are_instructions_and_the_values_unchanged() -> None:
    """On AVX-512 and AVX2 builds the kernels carry `prefetcht0`; both GEMMs match ONNX
    Runtime on the host."""
    model, inputs = _model()
    for name in ("avx512", "avx2"):
        asm = isa.compile_graph(_graph(), name)
        for kernel, code in asm.of_kind("conv_channels", "conv_gemm",
                                        "conv_channels_direct").items():
            assert "prefetcht0" in code, (name, kernel)
    got = compiler.compile(model, target="cpu").run(inputs)
    for name, want in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)
