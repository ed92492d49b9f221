"""ONNX's low-precision element types on the TVM targets: weights of int4/int2 codes
(DequantizeLinear of constants) build, float8e8m0 casts build, and a graph holding a type TVM
cannot (strings) is refused at compile time in one line. (float8/float6/float4/int4/int2
values, held in wider types, are tested in test_tvm_conformance_ops.py.)"""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler import onnx_import, reference
from compiler.errors import EtchError
from tests.golden import assert_close

RNG = np.random.default_rng(0)


def _cast_through(elem: int, opset: int) -> onnx.ModelProto:
    """x -> Cast(elem) -> Cast(float) -> y: the middle value needs `elem` in a kernel."""
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=elem, name="to_narrow"),
             helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", 1, [2, 3])],
                              [helper.make_tensor_value_info("y", 1, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11
    return model


def _strings_equal() -> onnx.ModelProto:
    """Equal of two string tensors: etch imports strings, TVM holds no such type."""
    graph = helper.make_graph(
        [helper.make_node("Equal", ["a", "b"], ["y"], name="eq")], "m",
        [helper.make_tensor_value_info(n, TensorProto.STRING, [2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.BOOL, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_cpu_refuses_a_type_tvm_cannot_build() -> None:
    with pytest.raises(EtchError, match=r"does not build element type object "
                                        r"\(value %a of node eq, Equal\)"):
        compiler.compile(_strings_equal(), target="cpu")


def test_cli_says_so_in_one_line(tmp_path) -> None:
    path = tmp_path / "strings.onnx"
    onnx.save(_strings_equal(), str(path))
    r = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", str(path),
                        "--target", "cpu", "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etch: error: the TVM backend does not "
                                                   "build element type object"), r.stderr
    assert not (tmp_path / "out").exists()


def test_float8e8m0_casts_build_on_cpu() -> None:
    """float8e8m0 values are held in float32 (exactly) and rounded as Cast-24 says."""
    model = _cast_through(TensorProto.FLOAT8E8M0, 24)
    x = {"x": np.array([[1.5, 3.0, 1e-40], [0.0, np.inf, 2.0 ** 120 * 1.75]], np.float32)}
    got = compiler.compile(model, target="cpu").run(x)
    np.testing.assert_array_equal(got["y"], reference.run(onnx_import.import_model(model), x)["y"])


@pytest.mark.parametrize("codes, block", [(ml_dtypes.int4, 0), (ml_dtypes.uint2, 4)],
                         ids=["int4_per_column", "uint2_blocked"])
def test_low_bit_qdq_weights_build_on_cpu(codes, block: int) -> None:
    """DequantizeLinear of int4 / uint2 codes (opset 21 / 25) becomes etch.Dequant of int8
    codes, which TVM builds; the result matches the reference exactly up to float rounding."""
    info = ml_dtypes.iinfo(codes)
    w = RNG.integers(info.min, info.max + 1, (8, 4)).astype(codes)
    scale = RNG.uniform(0.05, 0.2, (8 // block, 4) if block else (4,)).astype(np.float32)
    zero = np.full(scale.shape, (info.max + 1) // 2, np.int8).astype(codes)
    attrs = {"axis": 0, "block_size": block} if block else {"axis": 1}
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], **attrs),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (scale, "s"), (zero, "z"))]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", 1, [3, 8])],
                              [helper.make_tensor_value_info("y", 1, [3, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25 if block
                                                                        else 21)])
    model.ir_version = 11
    x = {"x": RNG.standard_normal((3, 8)).astype(np.float32)}
    art = compiler.compile(model, target="cpu")
    assert "etch.Dequant" in {n.op for n in art.graph.nodes}
    assert_close(art.run(x), reference.run(onnx_import.import_model(model), x))
