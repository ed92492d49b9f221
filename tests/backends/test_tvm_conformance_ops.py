"""The TVM lowerings issue 12 added or fixed, on the cpu target against ONNX Runtime (or, where
ORT lacks a kernel or differs from numpy, against the reference interpreter).

One model per family, each op into its own output, so one compile covers the family and a
failure names the op. Many ONNX node cases of these ops are of opsets the importer reads
only later (tests/backends/test_cpu_node_cases.py), so these build them at opset 17-21.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
from backends.tvm import lower
from compiler import onnx_import, reference
from compiler.errors import EtchError
from compiler.ops.dtypes import cast_to
from tests.backends.tvm_cases import ModelBuilder
from tests.golden import assert_bitexact, assert_close, run_ort

RTOL, ATOL = 1e-3, 1e-5
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _rand(m: ModelBuilder, *shape: int, low: float = -3, high: float = 3) -> np.ndarray:
    return m.rng.uniform(low, high, shape).astype(np.float32)


def _multi(m: ModelBuilder, op: str, inputs: list[str], outs: list[str], **attrs) -> None:
    m.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{outs[0]}", **attrs))
    m.outputs += [o for o in outs if o]


def indexing() -> tuple[onnx.ModelProto, dict]:
    m = ModelBuilder("indexing")
    x = m.input("x", _rand(m, 3, 4, 5))
    m.op("ArgMax", [x], "argmax", axis=1, keepdims=0)
    m.op("ArgMin", [x], "argmin_last", axis=-1, select_last_index=1)
    idx = m.const("idx", np.array([[[0, -1, 2, 1, 0]] * 4] * 3, np.int64))
    m.op("GatherElements", [x, idx], "gather_el", axis=1)
    m.op("Trilu", [x, m.const("k", np.array(1, np.int64))], "triu")
    m.op("Trilu", [x], "tril", upper=0)
    m.op("CumSum", [x, m.const("ax", np.array(1, np.int64))], "cumsum", exclusive=1, reverse=1)
    axis = m.input("axis", np.array(-1, np.int32))
    m.op("CumSum", [x, axis], "cumsum_runtime_axis")
    ind = m.const("ind", np.array([[0, 2], [-1, 3]], np.int64))
    m.op("OneHot", [ind, m.const("depth", np.array(4, np.int64)),
                    m.const("vals", np.array([-1.0, 5.0], np.float32))], "onehot", axis=1)
    ties = m.input("ties", np.array([[1, 3, 3, 2, 3, 0]], np.float32))
    _multi(m, "TopK", [ties, m.const("k3", np.array([3], np.int64))], ["top_v", "top_i"])
    _multi(m, "TopK", [x, m.const("k2", np.array([2], np.int64))], ["low_v", "low_i"],
           axis=1, largest=0)
    y = m.input("y", _rand(m, 1, 8, 2, 3))
    m.op("DepthToSpace", [y], "d2s_dcr", blocksize=2)
    m.op("DepthToSpace", [y], "d2s_crd", blocksize=2, mode="CRD")
    m.op("SpaceToDepth", ["d2s_dcr"], "s2d", blocksize=2)
    m.op("Einsum", [x, m.input("e", _rand(m, 3, 5, 2))], "einsum", equation="bij,bjk->bik")
    m.op("Einsum", [x], "trace_sum", equation="...ij->...")
    return m.build(opset=21)


def reductions() -> tuple[onnx.ModelProto, dict]:
    m = ModelBuilder("reductions")
    x = m.input("x", _rand(m, 2, 3, 4, low=0.5, high=1.5))
    axes = m.const("axes", np.array([0, 2], np.int64))
    for op in ("ReduceProd", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean"):
        m.op(op, [x, axes], op.lower(), keepdims=0)
    m.op("ReduceLogSumExp", [x], "lse_all")
    xi = m.input("xi", m.rng.integers(-9, 9, (3, 5)).astype(np.int32))
    m.op("ReduceMean", [xi, m.const("ax1", np.array([1], np.int64))], "int_mean")
    m.op("InstanceNormalization", [x, m.weight("s", 3), m.weight("b", 3)], "instnorm")
    z = m.input("z", _rand(m, 2, 3, 4))
    _multi(m, "LayerNormalization", [z, m.weight("g", 4), m.weight("bb", 4)],
           ["ln", "ln_mean", "ln_inv"], axis=-1)
    stats = [m.input(n, _rand(m, 3, low=0.5, high=2)) for n in ("bn_s", "bn_b", "bn_m", "bn_v")]
    m.op("BatchNormalization", [z, *stats], "bn_computed")
    return m.build(opset=18)


def windows() -> tuple[onnx.ModelProto, dict]:
    m = ModelBuilder("windows", seed=3)
    v = m.input("v", _rand(m, 1, 2, 5, 6, 4))
    w = m.input("w3", _rand(m, 3, 2, 3, 3, 2))
    m.op("Conv", [v, w, m.input("b3", _rand(m, 3))], "conv3d_computed", pads=[1, 0, 1, 1, 0, 1])
    m.op("MaxPool", [v], "maxpool3d", kernel_shape=[2, 3, 2], strides=[1, 2, 2])
    m.op("AveragePool", [v], "avgpool3d", kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1],
         count_include_pad=0)
    x = m.input("x", _rand(m, 1, 3, 6, 7))
    _multi(m, "MaxPool", [x], ["mp", "mp_idx"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
           strides=[2, 2])
    _multi(m, "MaxPool", [x], ["mpc", "mpc_idx"], kernel_shape=[2, 2], storage_order=1)
    m.op("LpPool", [x], "lppool", kernel_shape=[2, 3], p=3, pads=[0, 1, 0, 1])
    t = m.input("t", _rand(m, 1, 4, 7))
    m.op("ConvTranspose", [t, m.weight("wt", 4, 3, 3)], "convt1d", strides=[2],
         output_padding=[1])
    m.op("ConvTranspose", [x, m.input("wx", _rand(m, 3, 2, 3, 3))], "convt_computed",
         strides=[2, 1], pads=[1, 0, 0, 1])
    return m.build(opset=18)


def scalars() -> tuple[onnx.ModelProto, dict]:
    m = ModelBuilder("scalars")
    x = m.input("x", _rand(m, 4, 6))
    for op in ("Sin", "Cos", "Softsign", "Mish"):
        m.op(op, [x], op.lower())
    m.op("ThresholdedRelu", [x], "thresholded", alpha=0.5)
    m.op("IsNaN", [m.op("Log", [x], "logx", output=False)], "isnan")
    m.op("CastLike", [x, m.const("like", np.array([1], np.int32))], "castlike")
    m.op("Pad", [x, m.const("pads", np.array([1, 2, 0, 3], np.int64)),
                 m.input("value", np.array(7.5, np.float32))], "pad_computed_value")
    m.op("Pad", [x, m.const("pads2", np.array([2, 1, 1, 2], np.int64))], "pad_wrap",
         mode="wrap")
    m.op("Gemm", [x, m.weight("gw", 6, 3), m.input("c", _rand(m, 4, 3))], "gemm_beta",
         beta=0.35, alpha=1.5)
    return m.build(opset=19)


def quantised() -> tuple[onnx.ModelProto, dict]:
    m = ModelBuilder("quantised", seed=5)
    a = m.input("a", m.rng.integers(0, 255, (2, 4, 6)).astype(np.uint8))
    b = m.input("b", m.rng.integers(-128, 127, (6, 3)).astype(np.int8))
    sa, za = m.input("sa", np.array(0.02, np.float32)), m.input("za", np.array(120, np.uint8))
    sb = m.input("sb", np.array([0.01, 0.03, 0.02], np.float32))
    zb = m.input("zb", np.array(3, np.int8))
    sy, zy = m.input("sy", np.array(0.05, np.float32)), m.input("zy", np.array(7, np.uint8))
    m.op("QLinearMatMul", [a, sa, za, b, sb, zb, sy, zy], "qlmm")
    m.op("MatMulInteger", [a, b, za, zb], "mmi")
    x = m.input("x", m.rng.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8))
    w = m.input("w", m.rng.integers(-100, 100, (4, 2, 3, 3)).astype(np.int8))
    m.op("ConvInteger", [x, w, za], "convint", pads=[1, 1, 1, 1])
    sw = m.input("sw", np.array([0.01, 0.02, 0.03, 0.015], np.float32))
    bias = m.input("bias", m.rng.integers(-500, 500, 4).astype(np.int32))
    m.op("QLinearConv", [x, sa, za, w, sw, m.const("zw", np.array(0, np.int8)), sy, zy, bias],
         "qlconv", strides=[2, 2])
    f = m.input("f", _rand(m, 3, 8))
    _multi(m, "DynamicQuantizeLinear", [f], ["dq_y", "dq_s", "dq_z"])
    s_blk = m.input("s_blk", _rand(m, 3, 2, low=0.01, high=0.1))
    m.op("QuantizeLinear", [f, s_blk, m.const("z_blk", np.full((3, 2), -3, np.int8))], "q_blk",
         axis=1, block_size=4)
    m.op("DequantizeLinear", [a, m.input("s_deq", np.array([0.1, 0.2, 0.3, 0.4], np.float32)),
                              m.input("z_deq", np.array([1, 2, 3, 4], np.uint8))], "deq",
         axis=1)
    return m.build(opset=21)


def resizes() -> tuple[onnx.ModelProto, dict]:
    """Resize from constant roi/scales/sizes (the TVM backend builds only those; `--bind`
    makes graph inputs constants), every mode and several coordinate transformations."""
    m = ModelBuilder("resizes")
    x = m.input("x", _rand(m, 1, 2, 4, 5))
    none = ""
    up = m.const("up", np.array([1, 1, 2.5, 1.5], np.float32))
    down = m.const("down", np.array([1, 1, 0.6, 0.5], np.float32))
    m.op("Resize", [x, none, up], "nearest_ceil", mode="nearest",
         coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_ceil")
    m.op("Resize", [x, none, down], "linear_corners", mode="linear",
         coordinate_transformation_mode="align_corners")
    m.op("Resize", [x, none, up], "cubic_exclude", mode="cubic", exclude_outside=1,
         cubic_coeff_a=-0.5)
    m.op("Resize", [x, none, none, m.const("hw", np.array([7, 3], np.int64))], "sizes_axes",
         mode="linear", axes=[3, 2], keep_aspect_ratio_policy="not_larger")
    roi = m.const("roi", np.array([0.2, -0.3, 0.9, 1.2], np.float32))
    m.op("Resize", [x, roi, none, m.const("crop_hw", np.array([3, 4], np.int64))], "crop",
         mode="linear", axes=[2, 3], coordinate_transformation_mode="tf_crop_and_resize",
         extrapolation_value=-7.0)
    m.op("Resize", [x, none, m.const("same", np.ones(4, np.float32))], "unchanged")
    return m.build(opset=19)


FAMILIES = {"indexing": indexing, "reductions": reductions, "windows": windows,
            "scalars": scalars, "quantised": quantised}


def test_resize_matches_the_reference() -> None:
    """Against the reference (the numeric contract; the node cases check it against ONNX's
    expected outputs), with ORT's agreement on the float outputs as a sanity check."""
    model, inputs = resizes()
    got = compiler.compile(model, target="cpu").run(inputs)
    want = reference.run(onnx_import.import_model(model), inputs)
    assert_close(got, want, rtol=RTOL, atol=ATOL)
    ort = run_ort(model, inputs)
    assert_close(got, ort, rtol=RTOL, atol=ATOL)


def test_integer_resize_is_refused_in_one_line() -> None:
    """The reference truncates float64 interpolation; TVM's fused multiply-adds could
    truncate one lower, so integer Resize is refused rather than off by one."""
    model = _single("Resize", TensorProto.UINT8, [[1, 1, 2, 2], [0], [4]], TensorProto.UINT8,
                    mode="linear")
    model.graph.input[1].type.tensor_type.elem_type = F
    model.graph.input[2].type.tensor_type.elem_type = F
    scales = {"x2": np.array([1, 1, 2, 2], np.float32), "x1": np.zeros(0, np.float32)}
    with pytest.raises(EtchError, match=r"Resize of uint8 is not built on this target"):
        compiler.compile(model, target="cpu", bind=scales)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_ort(family: str) -> None:
    model, inputs = FAMILIES[family]()
    got = compiler.compile(model, target="cpu").run(inputs)
    assert_close(got, run_ort(model, inputs), rtol=RTOL, atol=ATOL)


def _single(op: str, dtype: int, shapes: list, out_dtype: int, **attrs) -> onnx.ModelProto:
    names = [f"x{k}" for k in range(len(shapes))]
    g = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], op,
                          [helper.make_tensor_value_info(n, dtype, s)
                           for n, s in zip(names, shapes)],
                          [helper.make_tensor_value_info("y", out_dtype, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_integer_pow_is_exact_and_wraps_like_numpy(dtype: type) -> None:
    rng = np.random.default_rng(1)
    signed = np.issubdtype(dtype, np.signedinteger)
    x = rng.integers(-7 if signed else 0, 8, 200).astype(dtype)
    y = rng.integers(0, 70, 200).astype(dtype)  # large exponents wrap
    if signed:
        x[:6], y[:6] = [1, -1, -1, 2, 0, 5], [-3, -3, -2, -1, -2, 0]
    onnx_t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _single("Pow", onnx_t, [[200], [200]], onnx_t)
    got = compiler.compile(model, target="cpu").run({"x0": x, "x1": y})["y"]
    with np.errstate(all="ignore"):
        want = np.power(x, np.maximum(y, 0)).astype(dtype)
    if signed:  # negative exponents: the truncated real power
        neg = y < 0
        want[neg] = np.where(x[neg] == 1, 1, np.where(x[neg] == -1, np.where(y[neg] % 2, -1, 1),
                                                      0)).astype(dtype)
    assert_bitexact({"y": got}, {"y": want})


def test_float_mod_is_numpys_remainder_and_fmod_cs() -> None:
    """ORT refuses float Mod without fmod before opset 28: compare with numpy."""
    x = np.array([3, -3, 3, -3, 2.5, -0.0, 7, 1e30], np.float32)
    y = np.array([np.inf, np.inf, -np.inf, 2, 0.0, -2, -0.5, 3], np.float32)
    for fmod, want in ((0, np.mod), (1, np.fmod)):
        model = _single("Mod", F, [[8], [8]], F, fmod=fmod)
        got = compiler.compile(model, target="cpu").run({"x0": x, "x1": y})["y"]
        with np.errstate(all="ignore"):  # exact values (a zero's sign is not kept)
            assert_close({"y": got}, {"y": want(x, y)}, rtol=0, atol=0)


def test_half_precision_matches_the_reference() -> None:
    """float16 MatMul and Softmax: sums in float32, each step rounded to float16."""
    m = ModelBuilder("half")
    q = m.input("q", _rand(m, 2, 8, 16).astype(np.float16))
    k = m.input("k", _rand(m, 2, 16, 8).astype(np.float16))
    m.op("Softmax", [m.op("MatMul", [q, k], "qk", output=False)], "attn")
    m.op("ReduceSum", [q, m.const("ax", np.array([-1], np.int64))], "rsum")
    model, inputs = m.build(opset=18)
    got = compiler.compile(model, target="cpu").run(inputs)
    graph = onnx_import.import_model(model)
    assert_close(got, reference.run(graph, inputs), rtol=1e-3, atol=1e-7)


def test_bfloat16_values_cross_the_runtime_boundary() -> None:
    """bfloat16 inputs and outputs (numpy's DLPack has no bfloat16) and arithmetic."""
    m = ModelBuilder("bf16")
    x = m.input("x", _rand(m, 3, 5))
    h = m.op("Cast", [x], "to_bf16", to=TensorProto.BFLOAT16)
    b = m.input("b", _rand(m, 5, 2).astype(onnx.helper.tensor_dtype_to_np_dtype(
        TensorProto.BFLOAT16)))
    m.op("Cast", [m.op("MatMul", [h, b], "mm", output=False)], "back", to=F)
    model, inputs = m.build(opset=21)
    got = compiler.compile(model, target="cpu").run(inputs)
    assert got["to_bf16"].dtype.name == "bfloat16"
    graph = onnx_import.import_model(model)
    assert_close(got, reference.run(graph, inputs), rtol=2 ** -6, atol=1e-6)


_EDGES = np.array([0, -0.0, 1, -1, 0.1, 1e-9, -3e-3, 2.5, 3.5, -6.5, 7.9, -8.5, 15.5, 100,
                   -300, 449, 464, 470, 57344, 61000, 1e6, np.inf, -np.inf, np.nan], np.float32)
NARROW = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
          "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "int4", "uint4", "int2", "uint2"]


@pytest.mark.parametrize("dtype, saturate, mode", [(d, 1, "up") for d in NARROW] +
                         [(d, 0, "up") for d in NARROW if d.startswith("float8")] +
                         [("float8_e8m0fnu", s, m) for s in (0, 1)
                          for m in ("up", "down", "nearest")])
def test_narrow_types_round_like_the_reference(dtype: str, saturate: int, mode: str) -> None:
    """Cast float32 -> narrow -> float32, int32 -> narrow, and narrow model inputs and outputs
    (held in int8/uint8/float32): bit for bit the reference's values (saturate is a float8
    attribute, round_mode a float8e8m0 one; the other types always saturate)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = np.concatenate([_EDGES, np.random.default_rng(2).normal(0, 30, 200).astype(np.float32),
                        np.ldexp(np.float32(1.5), np.arange(-130, 127, 7))])
    extra = {"round_mode": mode} if dtype == "float8_e8m0fnu" else {}
    nodes = [helper.make_node("Cast", ["x"], ["n"], to=elem, saturate=saturate, **extra),
             helper.make_node("Cast", ["n"], ["back"], to=F),
             helper.make_node("Cast", ["i"], ["ni"], to=elem),
             helper.make_node("Identity", ["v"], ["v_out"])]
    with np.errstate(all="ignore"):
        vals = cast_to(np.arange(-20, 20).astype(np.float32), np.dtype(dtype))
    ins = [helper.make_tensor_value_info("x", F, [x.size]),
           helper.make_tensor_value_info("i", TensorProto.INT32, [40]),
           helper.make_tensor_value_info("v", elem, [40])]
    outs = [helper.make_tensor_value_info(n, t, None)
            for n, t in (("n", elem), ("back", F), ("ni", elem), ("v_out", elem))]
    model = helper.make_model(helper.make_graph(nodes, "narrow", ins, outs),
                              opset_imports=[helper.make_opsetid("", 25)])
    feeds = {"x": x, "i": np.arange(-20, 20, dtype=np.int32) * 7, "v": vals}
    got = compiler.compile(model, target="cpu").run(feeds)
    with np.errstate(all="ignore"):
        want = reference.run(onnx_import.import_model(model), feeds)
    for name in want:  # compare as float64 (NaN equal; a zero's sign is not kept)
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name].astype(np.float64),
                                      want[name].astype(np.float64), err_msg=name)


def test_quantize_to_narrow_types_like_the_reference() -> None:
    m = ModelBuilder("qnarrow")
    x = m.input("x", _rand(m, 4, 8, low=-20, high=20))
    s = m.input("s", np.array(0.5, np.float32))
    for name, elem in (("q_int4", TensorProto.INT4), ("q_uint2", TensorProto.UINT2),
                       ("q_f8", TensorProto.FLOAT8E4M3FN), ("q_f4", TensorProto.FLOAT4E2M1)):
        zero = np.zeros((), onnx.helper.tensor_dtype_to_np_dtype(elem))
        q = m.op("QuantizeLinear", [x, s, m.const(f"z_{name}", zero)], name)
        m.op("DequantizeLinear", [q, s, f"z_{name}"], f"dq_{name}")
    model, inputs = m.build(opset=25)
    got = compiler.compile(model, target="cpu").run(inputs)
    want = reference.run(onnx_import.import_model(model), inputs)
    for name in want:
        np.testing.assert_array_equal(got[name].astype(np.float64),
                                      want[name].astype(np.float64), err_msg=name)


def test_constants_keep_dtype_and_rank() -> None:
    """int64/float64 constants were narrowed to 32 bits and 0-d outputs made 1-d."""
    m = ModelBuilder("consts")
    x = m.input("x", np.array([1, -2, 3], np.int64))
    m.op("Add", [x, m.const("big", np.array([1 << 40, 3, -(1 << 35)], np.int64))], "big_add")
    d = m.input("d", np.array([1.0, 2.0], np.float64))
    m.op("Mul", [d, m.const("third", np.array([1 / 3, 1e-300], np.float64))], "f64_mul")
    m.op("Size", [x], "size")
    model, inputs = m.build()
    got = compiler.compile(model, target="cpu").run(inputs)
    assert got["size"].shape == () and got["size"].dtype == np.int64
    assert_bitexact(got, run_ort(model, inputs))


def test_empty_outputs_build_no_kernel() -> None:
    m = ModelBuilder("empty")
    x = m.input("x", _rand(m, 2, 5))
    m.nodes.append(helper.make_node("Split", [x, m.const("parts", np.array([5, 0], np.int64))],
                                    ["full", "none"], axis=1))
    m.outputs += ["full", "none"]
    m.op("Slice", [x, m.const("s", np.array([3], np.int64)), m.const("e", np.array([3],
                                                                               np.int64))],
         "slice_empty")
    m.op("Relu", ["slice_empty"], "relu_empty")
    model, inputs = m.build(opset=18)
    assert_close(compiler.compile(model, target="cpu").run(inputs), run_ort(model, inputs))


def test_a_foreign_error_becomes_one_etch_error_naming_the_node(monkeypatch) -> None:
    def broken(ctx, node):
        raise ValueError("some TVM trouble\nat line 2: the actual reason")

    monkeypatch.setitem(lower.LOWERINGS, "Relu", broken)
    model = _single("Relu", F, [[3]], F)
    with pytest.raises(EtchError, match=r"node \S+ \(Relu\): the TVM backend cannot build it: "
                                        r"ValueError: at line 2: the actual reason"):
        compiler.compile(model, target="cpu")


def test_unbuildable_element_type_is_refused_at_compile_time() -> None:
    model = _single("Equal", TensorProto.STRING, [[2], [2]], TensorProto.BOOL)
    with pytest.raises(EtchError, match="does not build element type object"):
        compiler.compile(model, target="cpu")


def test_training_dropout_is_refused_and_inference_mask_built() -> None:
    train = _single("Dropout", F, [[4], [], []], F)
    train.graph.input[2].type.tensor_type.elem_type = TensorProto.BOOL
    with pytest.raises(EtchError, match="training mode"):
        compiler.compile(train, target="cpu")
    m = ModelBuilder("mask")
    x = m.input("x", _rand(m, 2, 3))
    _multi(m, "Dropout", [x], ["y", "mask"])
    model, inputs = m.build()
    assert_close(compiler.compile(model, target="cpu").run(inputs), run_ort(model, inputs))
