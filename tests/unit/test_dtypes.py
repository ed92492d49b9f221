"""ONNX's newer element types and opset 22..28 attributes in etch's reference: bit for bit
against ONNX Runtime where ORT runs them, else against values worked out from the format's
definition (float4/float6 have no ORT kernels; ONNX's expected outputs cover them too, in
tests/unit/test_onnx_node_cases.py).

Each graph keeps float32 (or int32) inputs and outputs: ORT's Python API cannot pass
float8/int4/int2 arrays, but runs them inside a graph."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_import, reference
from compiler.errors import EtchError
from compiler.ops.dtypes import to_float8e8m0
from tests.golden import assert_bitexact, run_ort

RNG = np.random.default_rng(0)
FLOAT8 = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
SMALL_INTS = ("INT4", "UINT4", "INT2", "UINT2")
SPECIALS = np.float32([0, -0.0, np.inf, -np.inf, np.nan, 1e9, -1e9, 1e-45, 0.5, -1.5])


def _model(nodes: list, inputs: list, outputs: list, inits: list = (),
           opset: int = 25) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11
    onnx.checker.check_model(model)
    return model


def _vec(name: str, n: int, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [n])


def _cast_chain(x: np.ndarray, to: int, opset: int, **attrs) -> onnx.ModelProto:
    """x -> Cast(to, attrs) -> Cast(float) -> y."""
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=to, **attrs),
             helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    return _model(nodes, [_vec("x", x.size, helper.np_dtype_to_tensor_dtype(x.dtype))],
                  [_vec("y", x.size)], opset=opset)


def _etch(model: onnx.ModelProto, feeds: dict) -> dict:
    return reference.run(onnx_import.import_model(model), feeds)


def _spread(n: int = 4000) -> np.ndarray:
    """Random float32 magnitudes over the whole exponent range, both signs, and specials."""
    x = RNG.standard_normal(n) * 10.0 ** RNG.integers(-40, 39, n)
    return np.concatenate([SPECIALS, x.astype(np.float32)])


# ---- Cast ---------------------------------------------------------------------------------
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", FLOAT8)
def test_float8_cast_matches_ort_bit_exactly(name: str, saturate: int) -> None:
    x = _spread()
    with np.errstate(over="ignore"):
        x16 = x.astype(np.float16)
    for src in (x, x16):
        model = _cast_chain(src, getattr(TensorProto, name), 21, saturate=saturate)
        got, want = _etch(model, {"x": src}), run_ort(model, {"x": src})
        if name == "FLOAT8E5M2" and not saturate:
            # ONNX Runtime gives NaN where x rounds to 2^16 (|x| in [61440, 65536)); the
            # spec's table ("[x] > FLT_MAX -> Inf") and ONNX's reference give +-Inf.
            mag = np.abs(src.astype(np.float32))
            band = (mag >= 61440) & (mag < 65536)
            assert band.any() and np.all(np.isnan(want["y"][band]))
            np.testing.assert_array_equal(got["y"][band], np.copysign(np.inf, src[band]))
            got, want = {"y": got["y"][~band]}, {"y": want["y"][~band]}
        assert_bitexact(got, want)


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
def test_float8e8m0_cast_matches_ort_bit_exactly(saturate: int, round_mode: str) -> None:
    x = _spread()
    model = _cast_chain(x, TensorProto.FLOAT8E8M0, 24, saturate=saturate, round_mode=round_mode)
    assert_bitexact(_etch(model, {"x": x}), run_ort(model, {"x": x}))


def test_float8e8m0_follows_the_spec_table() -> None:
    """Cast-24's table: 0 -> smallest / NaN, Inf and beyond the largest -> largest / NaN
    (saturate + up / non-saturate + nearest); ties round up."""
    lo, hi = 2.0 ** -127, 2.0 ** 127
    x = np.array([0, np.inf, 2.0 ** 128, 1e-45, np.nan, 1.1, 1.5, 1.4, 2.0 ** 126 * 1.9])
    up_sat = to_float8e8m0(x, True, "up").astype(np.float64)
    near = to_float8e8m0(x, False, "nearest").astype(np.float64)
    np.testing.assert_array_equal(up_sat, [lo, hi, hi, lo, np.nan, 2, 2, 2, hi])
    np.testing.assert_array_equal(near, [np.nan] * 5 + [1, 2, 1, hi])
    down = to_float8e8m0(np.array([1.9, 3.99, 2.0 ** -127]), True, "down")
    np.testing.assert_array_equal(down.astype(np.float64), [1, 2, lo])


def test_cast_round_mode_must_be_known() -> None:
    model = _cast_chain(np.ones(2, np.float32), TensorProto.FLOAT8E8M0, 24, round_mode="odd")
    with pytest.raises(EtchError, match="round_mode"):
        _etch(model, {"x": np.ones(2, np.float32)})


@pytest.mark.parametrize("name", SMALL_INTS)
def test_small_integer_cast_wraps_like_ort(name: str) -> None:
    """int32 -> int4/uint4/int2/uint2 discards the higher bits (Cast's fixed-point rule)."""
    x = np.arange(-40, 40, dtype=np.int32)
    model = _cast_chain(x, getattr(TensorProto, name), 25)
    assert_bitexact(_etch(model, {"x": x}), run_ort(model, {"x": x}))


# Values of the formats ONNX Runtime lacks, from their definitions: float4 e2m1 is
# {0, .5, 1, 1.5, 2, 3, 4, 6}; float6 e2m3 steps by 1/8 in [1, 2) up to 7.5; float6 e3m2
# steps by 1/16 in [.25, .5) up to 28. Round to nearest even; no Inf/NaN: saturate.
NO_ORT_CASTS = {
    "FLOAT4E2M1": ([0.25, 0.75, 1.25, 2.5, 5.0, 7.0, 1e9, -np.inf, -0.3],
                   [0, 1, 1, 2, 4, 6, 6, -6, -0.5]),
    "FLOAT6E2M3": ([1.0625, 1.1875, 7.2, 7.8, 1e9, -np.inf, 0.0625],
                   [1.0, 1.25, 7.0, 7.5, 7.5, -7.5, 0.0]),
    "FLOAT6E3M2": ([0.28125, 0.34375, 26.0, 30.0, np.inf, -1e9, 0.03125],
                   [0.25, 0.375, 24.0, 28.0, 28.0, -28.0, 0.0]),
}


@pytest.mark.parametrize("name", [n for n in NO_ORT_CASTS if hasattr(TensorProto, n)])
def test_float4_float6_cast_rounds_to_even_and_saturates(name: str) -> None:
    x, want = (np.array(v, np.float32) for v in NO_ORT_CASTS[name])
    opset = 28 if name.startswith("FLOAT6") else 23
    got = _etch(_cast_chain(x, getattr(TensorProto, name), opset), {"x": x})["y"]
    np.testing.assert_array_equal(got, want)


# ---- QuantizeLinear / DequantizeLinear ------------------------------------------------------
def _qdq(name: str, block: int, zero: bool, opset: int = 25) -> onnx.ModelProto:
    """x [4, 8] -> QuantizeLinear to `name` -> DequantizeLinear -> y; per tensor or blocked
    along axis 1, with or without a zero point (1)."""
    elem = getattr(TensorProto, name)
    scale = (RNG.uniform(0.05, 0.5, (4, 8 // block)) if block else np.array(0.37)).astype(
        np.float32)
    inits, args = [numpy_helper.from_array(scale, "s")], ["s"]
    if zero:
        zp = np.ones(scale.shape, np.float32).astype(helper.tensor_dtype_to_np_dtype(elem))
        inits.append(numpy_helper.from_array(zp, "z"))
        args.append("z")
    geometry = {"axis": 1, "block_size": block} if block else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", *args], ["q"], **geometry,
                              **({} if zero else {"output_dtype": elem})),
             helper.make_node("DequantizeLinear", ["q", *args], ["y"], **geometry)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], inits, opset)


@pytest.mark.parametrize("block", [0, 4])
@pytest.mark.parametrize("name", SMALL_INTS + FLOAT8)
def test_quantize_dequantize_matches_ort_bit_exactly(name: str, block: int) -> None:
    x = {"x": (RNG.standard_normal((4, 8)) * 3).astype(np.float32)}
    zeros = (False,) if name.startswith("FLOAT8") else (False, True)  # ORT: float8 zp is 0
    for zero in zeros:
        model = _qdq(name, block, zero)
        assert_bitexact(_etch(model, x), run_ort(model, x))


def test_float4_quantize_saturates_and_dequantizes() -> None:
    """float4 e2m1 through Q/DQ with blocked scales: x / s rounds to the e2m1 grid."""
    scale = np.float32([[0.5, 2.0]])  # blocks of 4 along axis 1
    x = np.float32([[0.1, 0.6, 2.2, 100.0, 1.0, 5.0, 9.0, -13.0]])
    want = np.float32([[0.0, 0.5, 2.0, 3.0, 1.0, 4.0, 8.0, -12.0]])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], axis=1, block_size=4,
                              output_dtype=TensorProto.FLOAT4E2M1),
             helper.make_node("DequantizeLinear", ["q", "s"], ["y"], axis=1, block_size=4)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                   [numpy_helper.from_array(scale, "s")])
    np.testing.assert_array_equal(_etch(model, {"x": x})["y"], want)


def _quantize_int16(scale: np.ndarray, opset: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.int16(7), "z")]
    return _model([node], [_vec("x", 64)], [_vec("y", 64, TensorProto.INT16)], inits, opset)


@pytest.mark.parametrize("scale, attrs, in_half", [
    (np.float16(0.5), {}, True),                               # the scale's type
    (np.float32(0.5), {"precision": TensorProto.FLOAT16}, True),
    (np.float16(0.5), {"precision": TensorProto.FLOAT}, False),
], ids=["float16_scale", "precision_float16", "precision_float"])
def test_quantize_divides_in_its_precision_like_ort(scale, attrs, in_half: bool) -> None:
    """QuantizeLinear-23: x / scale runs in `precision`, else in the scale's type (large x
    rounds differently in float16 than in float32)."""
    x = {"x": (RNG.standard_normal(64) * 1500).astype(np.float32)}
    model = _quantize_int16(np.asarray(scale), 23, **attrs)
    got = _etch(model, x)
    assert_bitexact(got, run_ort(model, x))
    in_float32 = np.clip(np.rint(x["x"] / np.float32(0.5)) + 7, -32768, 32767)
    assert bool((got["y"] != in_float32).any()) == in_half


@pytest.mark.parametrize("codes, scale, out", [
    (np.int8, np.float32(0.1), TensorProto.FLOAT16),
    (np.int16, np.float16(0.01), TensorProto.FLOAT),
    (np.int16, np.float16(0.01), None),
], ids=["int8_to_float16", "int16_float16_scale_to_float", "int16_float16_scale"])
def test_dequantize_output_dtype_matches_ort(codes, scale, out) -> None:
    """DequantizeLinear-23's output_dtype: (x - zp) * scale in float32, rounded once."""
    x = RNG.integers(np.iinfo(codes).min, np.iinfo(codes).max, 64).astype(codes)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(codes))
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"],
                            **({"output_dtype": out} if out else {}))
    inits = [numpy_helper.from_array(np.asarray(scale), "s"),
             numpy_helper.from_array(np.asarray(3, codes), "z")]
    y_elem = out or helper.np_dtype_to_tensor_dtype(np.asarray(scale).dtype)
    model = _model([node], [_vec("x", 64, elem)], [_vec("y", 64, y_elem)], inits, 23)
    got = _etch(model, {"x": x})
    assert got["y"].dtype == helper.tensor_dtype_to_np_dtype(y_elem)
    assert_bitexact(got, run_ort(model, {"x": x}))


def test_mx_scale_dequantizes_exactly_and_needs_output_dtype() -> None:
    """A float8e8m0 (microscaling) scale: y = x * 2^k, exact; without output_dtype the
    output type would be e8m0 itself, which the spec does not allow."""
    scale = np.float32([[2.0 ** -3, 4.0]]).astype(ml_dtypes.float8_e8m0fnu)
    x = np.arange(-4, 4, dtype=np.int8).reshape(1, 8)
    inits = [numpy_helper.from_array(scale, "s")]

    def dq(**attrs) -> onnx.ModelProto:
        node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], axis=1, block_size=4,
                                **attrs)
        return _model([node], [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)

    got = _etch(dq(output_dtype=TensorProto.FLOAT), {"x": x})["y"]
    np.testing.assert_array_equal(got, x * np.float32([0.125] * 4 + [4.0] * 4))
    with pytest.raises(EtchError, match="needs output_dtype"):
        _etch(dq(), {"x": x})


# ---- Range ----------------------------------------------------------------------------------
def _range(stash: int | None) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.float16(v), n)
             for v, n in ((2000.0, "a"), (2100.0, "b"), (0.3, "d"))]
    node = helper.make_node("Range", ["a", "b", "d"], ["y"],
                            **({} if stash is None else {"stash_type": stash}))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [334])
    return _model([node], [], [out], inits, 27)


@pytest.mark.parametrize("stash", [None, TensorProto.FLOAT, TensorProto.DOUBLE])
def test_float16_range_computes_in_its_stash_type_like_ort(stash: int | None) -> None:
    model = _range(stash)
    assert_bitexact(_etch(model, {}), run_ort(model, {}))


def test_range_refuses_a_float16_stash_type() -> None:
    with pytest.raises(EtchError, match="stash_type 10"):
        _etch(_range(TensorProto.FLOAT16), {})
