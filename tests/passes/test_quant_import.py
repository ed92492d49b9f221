"""AbsorbQdq: already-quantised ONNX keeps its parameters in etch's representation."""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import reference
from compiler.onnx_import import import_model
from models import zoo
from passes.absorb_qdq import AbsorbQdq
from passes.quantize_activations import QuantizeActivations
from tests.passes.quant_helpers import inputs_for, lsb_differences, ort_session


def ort_static_qdq(name: str, tmp_path: object) -> onnx.ModelProto:
    """ORT's static QDQ quantisation (int8, per channel) of a digits model."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            x = zoo.digits_inputs(name, zoo.digits_split()[0][:64])
            self.it = iter({"input": x[i:i + 1]} for i in range(len(x)))

        def get_next(self) -> dict | None:
            return next(self.it, None)

    out = f"{tmp_path}/{name}.qdq.onnx"
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(zoo.model_path(name)), out, Reader(), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(out)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_ort_static_qdq_model_keeps_its_scales(name: str, tmp_path: object) -> None:
    model = ort_static_qdq(name, tmp_path)
    g = import_model(model)
    absorbed, changed = AbsorbQdq().run(g)
    assert changed and "etch.Dequant" in absorbed.op_counts()
    sess = ort_session(model)
    xs = inputs_for(name, g, 16, offset=-1)
    for x in xs:
        feed = {"input": x[None]}
        assert np.array_equal(reference.run(absorbed, feed)["logits"], sess.run(None, feed)[0])
    integer, _ = QuantizeActivations({"input": inputs_for(name, g, 16)}).run(absorbed)
    assert "etch.QGemm" in integer.op_counts()
    given = {float(v.data) for k, v in g.values.items() if k.endswith("_scale") and v.size == 1}
    used = {float(v.quant.scale) for v in integer.values.values()
            if v.quant is not None and v.dtype == "int8" and not v.is_const}
    assert used <= given  # the model's activation scales, none from etch's calibration
    d = lsb_differences(integer, xs)
    assert np.mean(d <= 1) >= 0.999


def _qlinear_model(rng: np.random.Generator) -> onnx.ModelProto:
    """x -Q-> QLinearConv -> QLinearMatMul (after a Reshape) -> MatMulInteger (int32)."""
    t = numpy_helper.from_array
    inits = [t(np.float32(0.05), "sx"), t(np.int8(3), "zx"),
             t(rng.integers(-20, 20, (4, 2, 3, 3)).astype(np.int8), "w"),
             t(np.linspace(0.01, 0.02, 4).astype(np.float32), "sw"), t(np.zeros(4, np.int8), "zw"),
             t(np.float32(0.2), "sy"), t(np.int8(-5), "zy"),
             t(rng.integers(-100, 100, 4).astype(np.int32), "b"),
             t(np.array([1, 64], np.int64), "shape"),
             t(rng.integers(-30, 30, (64, 6)).astype(np.int8), "w2"), t(np.float32(0.01), "sw2"),
             t(np.int8(0), "zw2"), t(np.float32(0.3), "sz"), t(np.int8(1), "zz"),
             t(rng.integers(-9, 9, (6, 5)).astype(np.int8), "w3"), t(np.int8(2), "zz3")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"],
                              ["yq"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["yq", "shape"], ["yr"]),
             helper.make_node("QLinearMatMul", ["yr", "sy", "zy", "w2", "sw2", "zw2", "sz",
                                                "zz"], ["zq"]),
             helper.make_node("MatMulInteger", ["zq", "w3", "zz3"], ["acc"])]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("acc", TensorProto.INT32, [1, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_qlinear_ops_become_etch_integer_ops(rng: np.random.Generator) -> None:
    model = _qlinear_model(rng)
    g = import_model(model)
    absorbed, _ = AbsorbQdq().run(g)
    ops = absorbed.op_counts()
    assert ops["etch.QConv"] == 1 and ops["etch.QGemm"] == 2 and ops["etch.Requantize"] == 2
    assert not {"QLinearConv", "QLinearMatMul", "MatMulInteger"} & set(ops)
    sess = ort_session(model)
    worst = 0
    for _ in range(20):
        feed = {"x": rng.normal(size=(1, 2, 4, 4)).astype(np.float32)}
        ours, theirs = reference.run(absorbed, feed)["acc"], sess.run(None, feed)[0]
        want = reference.run(g, feed)["acc"]
        assert np.array_equal(want, theirs)  # the unabsorbed reference is ORT's semantics
        worst = max(worst, int(np.abs(ours.astype(np.int64) - theirs).max()))
    # Requantisation differs (fixed point vs float) by at most 1 LSB before the last
    # MatMulInteger, which multiplies that by at most sum |w3 - 2| over K.
    assert worst <= int(np.abs(absorbed.values[absorbed.nodes[-1].inputs[1]].data.astype(int)
                               - 2).sum(axis=0).max())


@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_becomes_dequant_and_matmul(rng: np.random.Generator,
                                                 symmetric: bool) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    w = rng.normal(size=(64, 32)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 32])],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    logging.getLogger().setLevel(logging.ERROR)
    quant = MatMulNBitsQuantizer(copy.deepcopy(model), block_size=16, is_symmetric=symmetric)
    quant.process()
    nbits = quant.model.model
    graph = import_model(nbits)
    absorbed, _ = AbsorbQdq().run(graph)
    assert absorbed.op_counts() == {"etch.Dequant": 1, "MatMul": 1}
    codes = absorbed.values[absorbed.nodes[0].inputs[0]]
    assert codes.quant.bits == 4 and codes.quant.group_size == 16 and codes.data.max() <= 15
    feed = {"x": rng.normal(size=(3, 64)).astype(np.float32)}
    ours = reference.run(absorbed, feed)["y"]
    np.testing.assert_allclose(ours, reference.run(graph, feed)["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours, ort_session(nbits).run(None, feed)[0], rtol=1e-4, atol=1e-4)
