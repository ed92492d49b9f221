"""The hand-built stride-1 and stride-2 float depthwise kernel (`schedules/depthwise_cpu.py`): no padded
copy of the plane, edge vectors shifted by shuffles, the TE kernel's epilogue substituted.
Results against the reference on odd shapes (host); the kernel's instructions per named
ISA (any host)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper

import compiler
from compiler import onnx_import, pipeline, reference
from compiler.options import CompileOptions
from tests.backends import isa
from tests.edge_tools import needs_edge
from tests.golden import RandomInits

# name: (input shape, kernel, pads, epilogue); every output row at least 16 wide
CASES = {
    "relu37": ([1, 8, 20, 37], 3, [1, 1, 1, 1], "relu"),  # 3 vectors, the last moved back
    "swish18": ([2, 6, 9, 18], 5, [2, 2, 2, 2], "swish"),  # batch 2, 9 rows, 5x5
    "clip_asym": ([1, 4, 3, 16], 3, [1, 0, 1, 2], "clip"),  # 3 rows, no left pad, 2 right
    "residual40": ([1, 8, 12, 40], 3, [1, 1, 1, 1], "residual"),  # + the conv's input
    "times2": ([1, 4, 6, 20], 3, [1, 1, 1, 1], "relu"),  # 2 output channels per input
    "s2_odd": ([1, 6, 11, 37], 3, [1, 1, 1, 1], "relu"),  # stride 2: 6 x 19 outputs
    "s2_5x5": ([2, 4, 10, 40], 5, [2, 1, 2, 2], "swish"),  # stride 2, uneven pads
    "rows2": ([1, 4, 9, 24], 3, [1, 1, 1, 1], "relu"),  # stride 2 down the rows only
}
MULTIPLIER = {"times2": 2}
STRIDES = {"s2_odd": [2, 2], "s2_5x5": [2, 2], "rows2": [2, 1]}


def depthwise_model():
    init = RandomInits(11)
    node = helper.make_node
    nodes, shapes = [], {}
    for name, (shape, k, pads, act) in CASES.items():
        x, c = "x_" + name, shape[1]
        oc = c * MULTIPLIER.get(name, 1)
        shapes[x] = shape
        init.weight("w_" + name, oc, 1, k, k)
        init.bias("w_" + name + "_b", oc)
        conv = name + "_c"
        stride = STRIDES.get(name, [1, 1])
        nodes.append(node("Conv", [x, "w_" + name, "w_" + name + "_b"], [conv], name=name,
                          group=c, pads=pads, strides=stride))
        if act == "relu":
            nodes.append(node("Relu", [conv], [name]))
        elif act == "swish":
            nodes += [node("Sigmoid", [conv], [name + "_s"]),
                      node("Mul", [conv, name + "_s"], [name])]
        elif act == "clip":
            nodes.append(node("Clip", [conv, "lo", "hi"], [name]))
        else:
            nodes += [node("Add", [conv, x], [name + "_r"]), node("Relu", [name + "_r"], [name])]
    inits = init.tensors + [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
                            helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "depthwise",
                              [value(k, TensorProto.FLOAT, s) for k, s in shapes.items()],
                              [value(o, TensorProto.FLOAT, None) for o in CASES], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inputs = {k: init.rng.normal(size=s).astype(np.float32) * 2 for k, s in shapes.items()}
    return model, inputs


def test_depthwise_kernel_matches_the_reference() -> None:
    model, inputs = depthwise_model()
    art = compiler.compile(model, target="cpu")
    assert art.manifest["schedules"].get("FloatDepthwise") == len(CASES)
    want = reference.run(onnx_import.import_model(model), inputs)
    got = art.run(inputs)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=name)


def test_one_dimensional_depthwise_conv_takes_the_kernel() -> None:
    """A 1-D depthwise conv (run with H = 1) at stride 2, batch 2."""
    rng = np.random.default_rng(2)
    w = helper.make_tensor("w", TensorProto.FLOAT, [6, 1, 5],
                           rng.standard_normal(30).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=6, pads=[2, 2], strides=[2])], "d1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 6, 50)).astype(np.float32)
    art = compiler.compile(model, target="cpu")
    assert art.manifest["schedules"] == {"FloatDepthwise": 1}
    want = reference.run(onnx_import.import_model(model), {"x": x})["y"]
    np.testing.assert_allclose(art.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def graph():
    model, _ = depthwise_model()
    return pipeline.run(onnx_import.import_model(model), CompileOptions())[0]


@pytest.mark.parametrize("name", sorted(isa.ISA_CPUS))
def test_depthwise_kernel_is_vector_code_in_place(graph, name: str) -> None:
    """Every case takes the kernel on every ISA; its taps are full-width vector FMAs, its
    edges shuffles, and it allocates and fills no padded plane."""
    asm = isa.compile_graph(graph, name)
    kernels = asm.of_kind("depthwise_conv2d")
    assert len(kernels) == len(CASES)
    for kernel, code in kernels.items():
        assert asm.rules.get("FloatDepthwise") == len(CASES), asm.rules
        assert asm.packed_fma(kernel, asm.lanes), f"{kernel}: no full-width FMA"
        assert "TVMBackendAllocWorkspace" not in code and "memset" not in code, kernel
        if name != "neon":
            assert re.search(r"vperm|vshuf|valign|vpalignr|vblend|vinsert|vmovss", code), kernel


@needs_edge
def test_depthwise_kernel_on_aarch64_matches_the_reference() -> None:
    """The NEON build (4 lanes: every case, the 5x5 too) run under qemu."""
    model, inputs = depthwise_model()
    art = compiler.compile(model, target="edge")
    want = reference.run(onnx_import.import_model(model), inputs)
    got = art.run(inputs)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=name)


def test_mid_size_depthwise_layers_run_in_parallel() -> None:
    """Depthwise layers of 0.1-1M multiply-adds (mobilenet_v2's 384 channels on 14x14,
    ~120 us on one core; 96 channels on 28x28, the in-place kernel) run in parallel
    (`PARALLEL_MIN_WINDOW_WORK`: two threads took mobilenet_v2 5.22 -> 4.89 ms; the
    threshold of the GEMM kernels kept them on one thread) and match ONNX Runtime on the
    host with two threads."""
    import tvm

    from backends.tvm import lower, schedules
    from backends.tvm import target as targets
    from tests.golden import run_ort

    init = RandomInits(9)
    node = helper.make_node
    model, inputs = init.model("dw", [
        node("Conv", ["a", init.weight("wa", 384, 1, 3, 3)], ["ya"], group=384, pads=[1] * 4),
        node("Conv", ["b", init.weight("wb", 96, 1, 3, 3)], ["yb"], group=96, pads=[1] * 4),
    ], {"a": [1, 384, 14, 14], "b": [1, 96, 28, 28]}, ["ya", "yb"])
    graph = onnx_import.import_model(model)
    for p in pipeline.passes_for(CompileOptions(target="cpu")):
        graph = p.run(graph)[0]
    target = tvm.target.Target(targets.cpu_target(CompileOptions(target="cpu", mcpu="znver4",
                                                                 threads=2))[0])
    mod = schedules.apply_rules(lower.to_irmodule(graph, pack=True, lanes=16), target)
    kernels = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
               and "depthwise" in str(f.attrs.get("etch.kind", ""))]
    assert len(kernels) == 2 and all("T.parallel" in f.script() for f in kernels)
    got = compiler.compile(model, target="cpu", threads=2).run(inputs)
    for name, want in run_ort(model, inputs).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=name)
