"""ONNX import and export: round trips through ONNX Runtime, old opsets, external data,
shape folding, and the errors a user sees."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_export, onnx_import, ops, reference
from compiler.errors import EtchError
from tests.golden import assert_bitexact, assert_close, assert_matches_ort, run_ort

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(name: str, *shape: int, scale: float = 0.5) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 21,
           domains: tuple = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8 if opset < 19 else 10
    onnx.checker.check_model(model)
    return model


def _io(name: str, shape: list, dtype: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ---- hand-built models ---------------------------------------------------------------------
def mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    inits = [_w("w1", 16, 32), _w("b1", 32), _w("w2", 10, 32), _w("b2", 10)]
    return _model(nodes, [_io("x", [4, 16])], [_io("y", [4, 10])], inits)


def cnn() -> onnx.ModelProto:
    bn = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in
          (("s", RNG.uniform(0.5, 1.5, 8)), ("bb", RNG.standard_normal(8)),
           ("m", RNG.standard_normal(8)), ("v", RNG.uniform(0.5, 2, 8)))]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "dw"], ["d"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["d"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = [_w("cw", 8, 3, 3, 3), _w("cb", 8), _w("dw", 8, 1, 3, 3), _w("fw", 5, 8),
             _w("fb", 5)] + bn
    return _model(nodes, [_io("x", [2, 3, 16, 16])], [_io("y", [2, 5])], inits)


def transformer_block(t: int = 6, d: int = 16, heads: int = 2) -> onnx.ModelProto:
    """LayerNorm -> self-attention (Reshape/Transpose/Softmax) -> residual -> LayerNorm ->
    MLP with the Erf form of GELU -> residual."""
    hd = d // heads
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "g1", "b1"], ["ln1"], axis=-1, epsilon=1e-5),
        n("MatMul", ["ln1", "wqkv"], ["qkv"]),
        n("Split", ["qkv", "split3"], ["q", "k", "v"], axis=-1),
        *[n("Reshape", [a, "heads_shape"], [a + "r"]) for a in "qkv"],
        n("Transpose", ["qr"], ["qt"], perm=[0, 2, 1, 3]),
        n("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["vr"], ["vt"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qt", "kt"], ["s"]),
        n("Mul", ["s", "inv_sqrt"], ["ss"]),
        n("Softmax", ["ss"], ["p"], axis=-1),
        n("MatMul", ["p", "vt"], ["o"]),
        n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ot", "model_shape"], ["om"]),
        n("MatMul", ["om", "wo"], ["proj"]),
        n("Add", ["x", "proj"], ["h1"]),
        n("LayerNormalization", ["h1", "g2", "b2"], ["ln2"], axis=-1),
        n("MatMul", ["ln2", "w_up"], ["up"]),
        n("Div", ["up", "sqrt2"], ["upd"]),
        n("Erf", ["upd"], ["e"]),
        n("Add", ["e", "one"], ["e1"]),
        n("Mul", ["up", "e1"], ["ue"]),
        n("Mul", ["ue", "half"], ["gelu"]),
        n("MatMul", ["gelu", "w_down"], ["down"]),
        n("Add", ["h1", "down"], ["y"]),
    ]
    scalars = {"inv_sqrt": 1 / math.sqrt(hd), "sqrt2": math.sqrt(2), "one": 1.0, "half": 0.5}
    inits = [_w("g1", d), _w("b1", d), _w("g2", d), _w("b2", d), _w("wqkv", d, 3 * d),
             _w("wo", d, d), _w("w_up", d, 4 * d), _w("w_down", 4 * d, d),
             _i64("split3", [d, d, d]), _i64("heads_shape", [1, t, heads, hd]),
             _i64("model_shape", [1, t, d])]
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in scalars.items()]
    return _model(nodes, [_io("x", [1, t, d])], [_io("y", [1, t, d])], inits)


@pytest.mark.parametrize("build, shape", [(mlp, (4, 16)), (cnn, (2, 3, 16, 16)),
                                          (transformer_block, (1, 6, 16))],
                         ids=["mlp", "cnn_bn", "transformer"])
def test_round_trip(build, shape) -> None:
    model, x = build(), {"x": _x(*shape)}
    graph = onnx_import.import_model(model)
    assert_matches_ort(model, x)
    exported = onnx_export.export_model(graph)
    onnx.checker.check_model(exported)
    # ORT on the exported graph reproduces ORT on the original exactly: import changed no
    # arithmetic (no folding or rewriting of these graphs).
    assert_bitexact(run_ort(exported, x), run_ort(model, x))
    assert_close(reference.run(graph, x), run_ort(exported, x))


# ---- old opsets ----------------------------------------------------------------------------
def _old(opset: int, nodes: list, x_shape: list, y_shape: list, inits: list = ()) -> tuple:
    model = _model(nodes, [_io("x", x_shape)], [_io("y", y_shape)], inits, opset=opset)
    return model, {"x": _x(*x_shape)}


OLD_MODELS = {
    "squeeze_unsqueeze_11": lambda: _old(11, [
        helper.make_node("Squeeze", ["x"], ["s"], axes=[1]),
        helper.make_node("Unsqueeze", ["s"], ["y"], axes=[0, -1])], [3, 1, 4], [1, 3, 4, 1]),
    "slice_9": lambda: _old(9, [helper.make_node("Slice", ["x"], ["y"], starts=[1, -3],
                                                 ends=[1000, -1], axes=[0, 2])],
                            [4, 3, 5], [3, 3, 2]),
    "slice_11_steps": lambda: _old(11, [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"],
                                                         ["y"])], [4, 6], [4, 3],
                                   [_i64("st", [-1]), _i64("en", [-100]), _i64("ax", [1]),
                                    _i64("sp", [-2])]),
    "clip_9": lambda: _old(9, [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25)],
                           [3, 4], [3, 4]),
    "clip_9_max_only": lambda: _old(9, [helper.make_node("Clip", ["x"], ["y"], max=0.1)],
                                    [3, 4], [3, 4]),
    "softmax_11_axis1": lambda: _old(11, [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
                                     [2, 3, 4], [2, 3, 4]),
    "softmax_12_default": lambda: _old(12, [helper.make_node("Softmax", ["x"], ["y"])],
                                       [2, 3, 4], [2, 3, 4]),
    "logsoftmax_9_axis0": lambda: _old(9, [helper.make_node("LogSoftmax", ["x"], ["y"],
                                                            axis=0)], [2, 3], [2, 3]),
    "split_11_attr": lambda: _old(11, [
        helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[1, 3]),
        helper.make_node("Concat", ["b", "a"], ["y"], axis=1)], [2, 4], [2, 4]),
    "split_12_equal": lambda: _old(12, [
        helper.make_node("Split", ["x"], ["a", "b"], axis=0),
        helper.make_node("Sub", ["a", "b"], ["y"])], [4, 3], [2, 3]),
    "reduce_11_axes": lambda: _old(11, [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
        helper.make_node("ReduceSum", ["m"], ["y"], axes=[-1])], [2, 3, 4], [2, 1]),
    "pad_10_attr": lambda: _old(10, [helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 1, 2],
                                                      mode="reflect")], [3, 4], [4, 7]),
    "dropout_9_ratio": lambda: _old(9, [helper.make_node("Dropout", ["x"], ["y"], ratio=0.3)],
                                    [2, 5], [2, 5]),
    "topk_9": lambda: _old(9, [helper.make_node("TopK", ["x"], ["y", "i"], k=2)], [3, 5],
                           [3, 2]),
    "batchnorm_9": lambda: _old(9, [helper.make_node("BatchNormalization",
                                                     ["x", "s", "b", "m", "v"], ["y"])],
                                [2, 3, 4], [2, 3, 4],
                                [_w("s", 3), _w("b", 3), _w("m", 3),
                                 numpy_helper.from_array(np.ones(3, np.float32), "v")]),
}


@pytest.mark.parametrize("name", sorted(OLD_MODELS))
def test_old_opset_matches_ort(name: str) -> None:
    model, feeds = OLD_MODELS[name]()
    out = assert_matches_ort(model, feeds)
    # The canonical (opset-21) graph exports to a model ORT runs with the same result.
    exported = onnx_export.export_model(onnx_import.import_model(model))
    assert exported.opset_import[0].version == 21
    assert_close(run_ort(exported, feeds), out)


def test_old_softmax_becomes_reshape_softmax_reshape() -> None:
    model, _ = OLD_MODELS["softmax_11_axis1"]()
    graph = onnx_import.import_model(model)
    assert [n.op for n in graph.nodes] == ["Reshape", "Softmax", "Reshape"]
    assert graph.nodes[1].attrs["axis"] == -1
    assert graph.values[graph.nodes[1].inputs[0]].shape == (2, 12)


def test_old_squeeze_axes_become_an_input() -> None:
    model, _ = OLD_MODELS["squeeze_unsqueeze_11"]()
    graph = onnx_import.import_model(model)
    squeeze = graph.nodes[0]
    assert squeeze.op == "Squeeze" and "axes" not in squeeze.attrs
    assert graph.const(squeeze.inputs[1]).tolist() == [1]


# ---- opsets 22 .. the installed onnx's newest ---------------------------------------------
def opset28() -> onnx.ModelProto:
    """Ops at their opset-28 versions: Conv-22, Mish-22, SpaceToDepth-28 (mode=CRD), Cast-28
    through float8, Mod-28 (fmod=0 on floats, refused by ORT before opset 28)."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             n("Mish", ["c"], ["m"]),
             n("SpaceToDepth", ["m"], ["s"], blocksize=2, mode="CRD"),
             n("Cast", ["s"], ["s8"], to=TensorProto.FLOAT8E4M3FN),
             n("Cast", ["s8"], ["sf"], to=F),
             n("Mod", ["sf", "period"], ["md"], fmod=0),
             n("Flatten", ["md"], ["fl"]),
             n("MatMul", ["fl", "fw"], ["y"])]
    inits = [_w("w", 8, 4, 3, 3), _w("b", 8), _w("fw", 128, 5),
             numpy_helper.from_array(np.float32(-0.75), "period")]
    model = _model(nodes, [_io("x", [1, 4, 4, 4])], [_io("y", [1, 5])], inits, opset=28)
    model.ir_version = 11
    return model


def test_opset_28_model_matches_ort_and_keeps_its_opset() -> None:
    model, x = opset28(), {"x": _x(1, 4, 4, 4)}
    out = assert_matches_ort(model, x)
    graph = onnx_import.import_model(model)
    assert [nd.op for nd in graph.nodes][2:4] == ["SpaceToDepth", "Cast"]
    exported = onnx_export.export_model(graph)
    onnx.checker.check_model(exported)
    # SpaceToDepth's mode exists only from opset 28: the graph must stay at 28.
    assert graph.opset == exported.opset_import[0].version == 28
    assert_close(run_ort(exported, x), out)


def test_opsets_up_to_the_installed_onnx_are_read() -> None:
    """Every opset from 9 to onnx's newest imports (a Relu is the same at each)."""
    for opset in range(onnx_import.MIN_OPSET, onnx_import.max_opset() + 1):
        model = _model([helper.make_node("Relu", ["x"], ["y"])], [_io("x", [3])],
                       [_io("y", [3])], opset=opset)
        assert onnx_import.import_model(model).metadata["etch.source_opset"] == str(opset)
    assert onnx_import.max_opset() == onnx.defs.onnx_opset_version() >= 28


@pytest.mark.parametrize("opset", [0, onnx.defs.onnx_opset_version() + 1])
def test_opset_outside_the_readable_range_is_refused(opset: int) -> None:
    """Opsets 1 to 8 are read where their ops are unchanged since 9 (tests/unit/test_bind.py)."""
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_io("x", [3])], [_io("y", [3])])
    model.opset_import[0].version = opset
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(EtchError, match=f"opset {opset}; etch reads opsets 1 to {newest}"):
        onnx_import.import_model(model)


def test_op_version_newer_than_reviewed_is_refused(monkeypatch) -> None:
    """With the review at opset 24, a Cast-25 (int2 added) is refused by name, while ops
    unchanged since then still import at opset 28."""
    monkeypatch.setattr(ops, "REVIEWED_OPSET", 24)
    cast = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)],
                  [_io("x", [3])], [_io("y", [3], TensorProto.INT32)], opset=28)
    with pytest.raises(EtchError, match=r"up to opset 24, not Cast-28"):
        onnx_import.import_model(cast)
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], [_io("x", [3])], [_io("y", [3])],
                  opset=28)
    assert [nd.op for nd in onnx_import.import_model(relu).nodes] == ["Relu"]


# Every element type ONNX added for low-precision models, as far as the installed onnx has
# it: the first opset whose Cast takes it, and values it holds exactly.
NEW_TYPES = {name: values for name, values in {
    "FLOAT8E4M3FN": [0.5, -448.0, 1.75, 0.0], "FLOAT8E4M3FNUZ": [0.5, -240.0, 1.75, 0.0],
    "FLOAT8E5M2": [0.5, -57344.0, 1.5, np.inf], "FLOAT8E5M2FNUZ": [0.5, -57344.0, 1.5, 0.0],
    "FLOAT8E8M0": [0.5, 2.0 ** 127, 2.0 ** -127, np.nan], "INT4": [-8, 7, 0, 3],
    "UINT4": [0, 15, 9, 3], "INT2": [-2, 1, 0, -1], "UINT2": [0, 3, 2, 1],
    "FLOAT4E2M1": [0.5, -6.0, 1.5, 3.0], "FLOAT6E2M3": [0.125, -7.5, 1.875, 3.0],
    "FLOAT6E3M2": [0.0625, -28.0, 1.75, 3.0],
}.items() if hasattr(TensorProto, name)}


def _first_opset(elem: int) -> int:
    name = f"tensor({helper.tensor_dtype_to_string(elem).split('.')[-1].lower()})"
    return next(v for v in range(19, onnx.defs.onnx_opset_version() + 1)
                if name in onnx.defs.get_schema("Cast", v).type_constraints[1].allowed_type_strs)


@pytest.mark.parametrize("name", sorted(NEW_TYPES))
def test_new_element_type_imports_runs_and_exports(name: str) -> None:
    """A graph input, an initializer (int4/int2/float4/float6 ones are packed several to a
    byte) and outputs of the type: imported, run exactly, exported and read back."""
    elem = getattr(TensorProto, name)
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    data = np.array(NEW_TYPES[name], np.float32).astype(dtype)
    nodes = [helper.make_node("Concat", ["x", "k"], ["xk"], axis=0),
             helper.make_node("Cast", ["xk"], ["f"], to=F)]
    model = _model(nodes, [_io("x", [4], elem)], [_io("xk", [8], elem), _io("f", [8])],
                   [numpy_helper.from_array(data[::-1].copy(), "k")], opset=_first_opset(elem))
    graph = onnx_import.import_model(model)
    assert graph.values["x"].dtype == graph.values["k"].dtype == dtype.name
    out = reference.run(graph, {"x": data})
    both = np.concatenate([data, data[::-1]])
    assert_bitexact(out, {"xk": both, "f": both.astype(np.float32)})
    exported = onnx_export.export_model(graph)
    onnx.checker.check_model(exported)
    assert exported.graph.input[0].type.tensor_type.elem_type == elem
    assert_bitexact(reference.run(onnx_import.import_model(exported), {"x": data}), out)


# ---- loading -------------------------------------------------------------------------------
def test_external_data(tmp_path) -> None:
    model = mlp()
    x = {"x": _x(4, 16)}
    expected = run_ort(model, x)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="mlp.weights", size_threshold=0)  # (moves the data out of `model`)
    assert (tmp_path / "mlp.weights").stat().st_size > 0
    graph = onnx_import.import_model(path)
    assert_close(reference.run(graph, x), expected)


def test_dynamic_dims_need_input_shape() -> None:
    dyn = mlp()
    dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(EtchError, match="--input-shape x=1x16"):
        onnx_import.import_model(dyn)
    graph = onnx_import.import_model(dyn, input_shapes={"x": (3, 16)})
    assert graph.values["y"].shape == (3, 10)


def test_shape_chain_folds_to_static() -> None:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (PyTorch's flatten) folds away."""
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]),
             n("Gather", ["s", "zero"], ["b"], axis=0),
             n("Unsqueeze", ["b", "ax0"], ["b1"]),
             n("Concat", ["b1", "minus1"], ["shape"], axis=0),
             n("Reshape", ["x", "shape"], ["r"]),
             n("Relu", ["r"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), _i64("ax0", [0]),
             _i64("minus1", [-1])]
    model = _model(nodes, [_io("x", [2, 3, 4])], [_io("y", [2, 12])], inits, opset=13)
    graph = onnx_import.import_model(model)
    assert [nd.op for nd in graph.nodes] == ["Reshape", "Relu"]
    assert graph.const(graph.nodes[0].inputs[1]).tolist() == [2, -1]
    assert all(v.shape is not None for v in graph.values.values())
    assert_matches_ort(model, {"x": _x(2, 3, 4)})


def test_unsupported_op_names_op_and_node() -> None:
    node = helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")
    model = _model([node], [_io("x", [2, 3])], [_io("y", [2, 3])])
    with pytest.raises(EtchError, match=r"Hardmax \(node the_hardmax\)"):
        onnx_import.import_model(model)


def test_dynamic_shape_input_is_refused() -> None:
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="dyn_reshape")
    model = _model([node], [_io("x", [2, 3]), _io("shape", [2], TensorProto.INT64)],
                   [_io("y", ["a", "b"])])
    with pytest.raises(EtchError, match="dyn_reshape.*decides the output shape"):
        onnx_import.import_model(model)


# ---- quantised ops against ONNX Runtime ----------------------------------------------------
def _nbits_model(k: int, n: int, bits: int, block: int, zp: bool, bias: bool) -> tuple:
    blocks = -(-k // block)
    blob = block * bits // 8
    inits = [numpy_helper.from_array(RNG.integers(0, 256, (n, blocks, blob), np.uint8), "B"),
             numpy_helper.from_array(RNG.uniform(0.01, 0.1, n * blocks).astype(np.float32), "S")]
    inputs = ["A", "B", "S"]
    if zp:
        zp_bytes = -(-blocks * bits // 8)
        inits.append(numpy_helper.from_array(RNG.integers(0, 256, n * zp_bytes, np.uint8), "Z"))
    inputs.append("Z" if zp else "")
    if bias:
        inits.append(_w("bias", n))
        inputs += ["", "bias"]
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=bits, block_size=block)
    graph = helper.make_graph([node], "nbits", [_io("A", [3, k])], [_io("Y", [3, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model, {"A": _x(3, k)}


@pytest.mark.parametrize("k, n, bits, block, zp, bias", [
    (64, 8, 4, 32, False, False), (64, 8, 4, 16, True, False), (40, 5, 4, 16, True, True),
    (48, 6, 4, 32, False, True), (64, 8, 8, 32, True, False), (64, 4, 2, 16, True, False)])
def test_matmul_nbits_matches_ort(k, n, bits, block, zp, bias) -> None:
    model, feeds = _nbits_model(k, n, bits, block, zp, bias)
    try:
        run_ort(model, feeds)
    except Exception as e:  # noqa: BLE001 - ORT's CPU kernel lacks some bit widths
        pytest.skip(f"ORT cannot run MatMulNBits bits={bits}: {str(e)[:80]}")
    assert_matches_ort(model, feeds)


def test_qlinear_ops_match_ort_bit_exactly() -> None:
    """Per-channel QLinearConv and QLinearMatMul: ORT's round-half-even requantisation.

    Weights are 7-bit: on AVX2 CPUs without VNNI, ORT's u8s8 kernels (vpmaddubsw) saturate
    pairs of products to int16, so 8-bit signed weights can differ from ONNX's exact int32
    accumulation, which etch implements (ORT's own advice is reduce_range=True)."""
    u8 = lambda name, a: numpy_helper.from_array(np.asarray(a, np.uint8), name)
    f32 = lambda name, a: numpy_helper.from_array(np.asarray(a, np.float32), name)
    inits = [f32("xs", 0.02), u8("xz", 128), numpy_helper.from_array(
        RNG.integers(-64, 64, (4, 3, 3, 3), np.int8), "w"),
        f32("ws", RNG.uniform(0.005, 0.02, 4)), numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
        f32("ys", 0.05), u8("yz", 100),
        numpy_helper.from_array(RNG.integers(-500, 500, 4).astype(np.int32), "bias"),
        numpy_helper.from_array(RNG.integers(0, 256, (36, 6), np.uint8), "mw"),
        f32("ms", 0.01), u8("mz", 120), f32("os", 0.2), u8("oz", 128)]
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                              "bias"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "flat"], ["cf"]),
             helper.make_node("QLinearMatMul", ["cf", "ys", "yz", "mw", "ms", "mz", "os", "oz"],
                              ["y"])]
    inits.append(_i64("flat", [-1, 36]))
    model = _model(nodes, [_io("x", [1, 3, 6, 6], TensorProto.UINT8)],
                   [_io("y", [4, 6], TensorProto.UINT8)], inits)
    feeds = {"x": RNG.integers(0, 256, (1, 3, 6, 6), np.uint8)}
    assert_bitexact(reference.run(onnx_import.import_model(model), feeds), run_ort(model, feeds))


# ---- models quantised by ONNX Runtime's own tools ------------------------------------------
class _Calibration:
    """ORT's CalibrationDataReader protocol over a few random batches."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self._batches = iter([{"x": _x(*shape)} for _ in range(4)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _ort_quantized(kind: str, model: onnx.ModelProto, shape: tuple, tmp_path) -> onnx.ModelProto:
    from onnxruntime import quantization as q  # heavy import: only where used

    src, dst = str(tmp_path / "float.onnx"), str(tmp_path / "quant.onnx")
    onnx.save(model, src)
    # reduce_range: 7-bit weights, so ORT's AVX2 u8s8 kernels do not saturate (see above).
    if kind == "dynamic":
        q.quantize_dynamic(src, dst, weight_type=q.QuantType.QInt8, reduce_range=True)
    elif kind == "qdq":
        q.quantize_static(src, dst, _Calibration(shape), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, reduce_range=True)
    else:
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits

        config = nbits.DefaultWeightOnlyQuantConfig(block_size=16, is_symmetric=False, bits=4)
        quantizer = nbits.MatMulNBitsQuantizer(onnx.load(src), algo_config=config)
        quantizer.process()
        return quantizer.model.model
    return onnx.load(dst)


@pytest.mark.parametrize("kind, build, shape", [
    ("dynamic", transformer_block, (1, 6, 16)), ("dynamic", cnn, (2, 3, 16, 16)),
    ("qdq", cnn, (2, 3, 16, 16)), ("qdq", transformer_block, (1, 6, 16)),
    ("nbits", transformer_block, (1, 6, 16))],
    ids=["dynamic_transformer", "dynamic_cnn", "qdq_cnn", "qdq_transformer", "nbits_transformer"])
def test_ort_quantized_models_match_ort(kind, build, shape, tmp_path) -> None:
    """DynamicQuantizeLinear/MatMulInteger/ConvInteger, QDQ, and MatMulNBits models."""
    quantized = _ort_quantized(kind, build(), shape, tmp_path)
    assert_matches_ort(quantized, {"x": _x(*shape)})


def test_omitted_optional_outputs_named_empty_import_and_match_ort() -> None:
    """ONNX writes "" for an optional output a node does not produce: trailing (Dropout's
    mask) or before a produced one (LayerNormalization's Mean before InvStdDev)."""
    x = RNG.standard_normal((2, 3, 8)).astype(np.float32)
    nodes = [helper.make_node("Dropout", ["x"], ["d", ""]),
             helper.make_node("LayerNormalization", ["d", "g", "b"], ["y", "", "inv"], axis=-1),
             # a value the placeholder name must not collide with
             helper.make_node("Identity", ["y"], ["LayerNormalization_1_unused1_0"])]
    model = _model(nodes, [_io("x", [2, 3, 8])],
                   [_io("LayerNormalization_1_unused1_0", [2, 3, 8]), _io("inv", [2, 3, 1])],
                   [_w("g", 8), _w("b", 8)])
    assert_matches_ort(model, {"x": x})
    graph = onnx_import.import_model(model)
    dropout, norm = graph.nodes[0], graph.nodes[1]
    assert len(dropout.outputs) == 1
    assert norm.outputs[1] not in ("", "LayerNormalization_1_unused1_0")
    assert len({o for n in graph.nodes for o in n.outputs}) == 5
