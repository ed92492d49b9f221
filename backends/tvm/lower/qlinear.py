"""ONNX's quantised ops as their spec defines them, with any operand computed: QuantizeLinear
and DequantizeLinear (per tensor, per axis or blocked), DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv. compiler/ops/quant.py is their meaning.

The integer path (`--int`) turns constant-parameter forms into etch's own integer ops
(passes/absorb_qdq.py; `int_*` kernels with x86 intrinsics and fixed-point requantisation);
what reaches these lowerings is what a float graph runs as written: accumulate exactly in
int32 ((a - a_zero)(b - b_zero)), requantise the QLinear ops as ONNX Runtime does, in
float32: saturate(rint(float32(acc) * (s_a * s_b / s_y)) + y_zero). QuantizeLinear /
DequantizeLinear with constant, unblocked parameters keep the `int_eltwise` kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_dtypes
import numpy as np
import onnx
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.conv_direct import accumulate, geometry
from backends.tvm.lower.int_eltwise import lower_dequantize_linear, lower_quantize_linear
from backends.tvm.lower.narrow import is_narrow, to_narrow
from backends.tvm.lower.reduce import MAX, MIN
from compiler.errors import EtchError
from compiler.ir import Node

Expr = tirx.Expr


# ---- parameters ---------------------------------------------------------------------------
class Param:
    """A scale or zero point read at an output position: a scalar, one value per `axis`, or
    one per block of `block` along `axis` (same rank as the data)."""

    def __init__(self, shape: tuple[int, ...], axis: int, block: int) -> None:
        self.shape, self.axis, self.block = shape, axis, block

    def at(self, t: te.Tensor, idx: Sequence[Expr]) -> Expr:
        size = int(np.prod(self.shape))
        if size == 1:
            return t(*[0] * len(self.shape))
        if self.block:
            return t(*[v // self.block if d == self.axis else v for d, v in enumerate(idx)])
        return t(idx[self.axis])


def _names(node: Node, idx: Sequence[int]) -> list[str]:
    return [node.inputs[k] if len(node.inputs) > k else "" for k in idx]


def saturate(v: Expr, dtype: str, info: object = None) -> Expr:
    """A float holding an integer, clamped to the range of `info` (default: `dtype`'s) and
    converted to `dtype`."""
    info = info or np.iinfo(dtype)
    ft = str(v.ty.dtype)
    v = tirx.min(tirx.max(v, tirx.const(float(info.min), ft)), tirx.const(float(info.max), ft))
    return v.astype("int64").astype(dtype)


# ---- QuantizeLinear / DequantizeLinear ----------------------------------------------------
def _constant_plain(ctx: LowerCtx, node: Node) -> bool:
    """Whether the `int_eltwise` kernel computes this node as the reference does: constant,
    unblocked parameters, float32 data and scale, 8/16-bit integer codes, no precision or
    output_dtype."""
    scale, zero = _names(node, (1, 2))
    code = ctx.elem_type(node.outputs[0] if node.op == "QuantizeLinear" else node.inputs[0])
    if code not in ("int8", "uint8", "int16", "uint16"):
        return False
    floats = {ctx.dtype(node.inputs[0] if node.op == "QuantizeLinear" else node.outputs[0]),
              ctx.dtype(scale)}
    return not int(node.attrs.get("block_size", 0)) and ctx.const(scale) is not None and \
        (not zero or ctx.const(zero) is not None) and floats == {"float32"} and \
        not node.attrs.get("precision") and not node.attrs.get("output_dtype")


def lower_quantize(ctx: LowerCtx, node: Node) -> None:
    """QuantizeLinear: saturate(rint(x / scale) + zero)."""
    if _constant_plain(ctx, node):
        lower_quantize_linear(ctx, node)
        return
    _qdq(ctx, node, quantize=True)


def lower_dequantize(ctx: LowerCtx, node: Node) -> None:
    """DequantizeLinear: (x - zero) * scale, in the scale's type."""
    if _constant_plain(ctx, node):
        lower_dequantize_linear(ctx, node)
        return
    _qdq(ctx, node, quantize=False)


def _qdq(ctx: LowerCtx, node: Node, quantize: bool) -> None:
    """The reference's formulas (compiler/ops/quant.py), any output type: quantising to an
    integer type saturates to its range, to a float type (float8, ...) adds the zero point
    and converts as Cast does; dequantising a float type subtracts in the working type."""
    x, out = node.inputs[0], node.outputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    code = ctx.elem_type(out) if quantize else ctx.elem_type(x)  # the quantised type
    integral = code.startswith(("int", "uint"))
    rank = len(shape)
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1)
    block = int(node.attrs.get("block_size", 0))
    names = [n for n in _names(node, (1, 2)) if n]
    params = [Param(ctx.shape(n), axis, block) for n in names]
    work = _work_type(ctx, node, quantize)
    saturating = bool(node.attrs.get("saturate", 1))

    def compute(xt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            s = params[0].at(ts[0], i).astype(work)
            z = params[1].at(ts[1], i) if len(ts) > 1 else None
            if quantize and integral:
                y = tirx.nearbyint(xt(*i).astype(work) / s).astype("float64")
                zero = z.astype("float64") if z is not None else 0.0
                return saturate(y + zero, dtype, ml_dtypes.iinfo(code))
            if quantize:
                y = xt(*i).astype(work) / s + (z.astype(work) if z is not None else 0.0)
                return to_narrow(y, code, saturating) if is_narrow(code) else y.astype(dtype)
            if integral:
                v = xt(*i).astype("int64") - (z.astype("int64") if z is not None else 0)
            else:
                v = xt(*i).astype(work) - (z.astype(work) if z is not None else 0.0)
            return (v.astype(work) * s).astype(dtype)
        return te.compute(shape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), *(ctx.expr(n) for n in names)], node,
                            "elementwise"))


def _work_type(ctx: LowerCtx, node: Node, quantize: bool) -> str:
    """The type the reference computes in: QuantizeLinear divides in `precision`, else in
    the scale's type; DequantizeLinear multiplies in float32 (float64 beside a float64 scale
    or output) and rounds once."""
    scale = ctx.dtype(node.inputs[1])
    if quantize:
        named = node.attrs.get("precision")
        prec = onnx_type_name(named) if named else scale
        return prec if prec in ("float16", "bfloat16", "float32", "float64") else "float32"
    return "float64" if "float64" in (scale, ctx.dtype(node.outputs[0])) else "float32"


def onnx_type_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type number."""
    return onnx.helper.tensor_dtype_to_np_dtype(int(elem_type)).name


def lower_dynamic_quantize(ctx: LowerCtx, node: Node) -> None:
    """DynamicQuantizeLinear: uint8 y, scale and zero point from the range of x and 0."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    f32 = "float32"

    def compute(xt: te.Tensor) -> list[te.Tensor]:
        rs = [te.reduce_axis((0, d), f"r{k}") for k, d in enumerate(shape)]
        lo = te.compute((), lambda: MIN(xt(*rs), axis=rs), name="lo")
        rs2 = [te.reduce_axis((0, d), f"s{k}") for k, d in enumerate(shape)]
        hi = te.compute((), lambda: MAX(xt(*rs2), axis=rs2), name="hi")
        zero = tirx.const(0, f32)

        def scale_of() -> Expr:
            a, b = tirx.min(lo(), zero), tirx.max(hi(), zero)
            return tirx.Select(b > a, (b - a) / tirx.const(255, f32), tirx.const(1, f32))

        scale = te.compute((), scale_of, name="scale")
        zp = te.compute((), lambda: saturate(tirx.nearbyint(
            zero - tirx.min(lo(), zero) / scale()), "uint8"), name="zero_point")
        y = te.compute(shape, lambda *i: saturate(
            tirx.nearbyint(xt(*i) / scale()) + zp().astype(f32), "uint8"), name="epilogue")
        return [y, scale, zp]

    three = ctx.emit(compute, [ctx.expr(x)], node, "dynamic_quantize")
    ctx.bind(node, *(ctx.bb.emit(relax.TupleGetItem(three, k)) for k in range(3)))


# ---- integer matmul / conv ----------------------------------------------------------------
def _matmul_acc(at: te.Tensor, bt: te.Tensor, oshape: tuple, az: te.Tensor | None,
                bz: te.Tensor | None) -> te.Tensor:
    """int32 sum_k (a - az)(b - bz) with numpy broadcasting of leading dims; a zero point is
    a scalar, per row of a (az) or per column of b (bz)."""
    ashape, bshape = [int(d) for d in at.shape], [int(d) for d in bt.shape]
    r = te.reduce_axis((0, ashape[-1]), "k")

    def lead(shape: list[int], i: Sequence[Expr]) -> list[Expr]:
        batch = list(i[len(i) - len(shape):-2]) if len(shape) > 2 else []
        return [0 if d == 1 else v for d, v in zip(shape[:-2], batch)]

    def zero(t: te.Tensor | None, pos: Expr) -> Expr:
        if t is None:
            return tirx.const(0, "int32")
        return (t(pos) if int(np.prod([int(d) for d in t.shape])) > 1 else
                t(*[0] * len(t.shape))).astype("int32")

    def body(*i: Expr) -> Expr:
        m, n = i[-2], i[-1]
        a = at(*lead(ashape, i), m, r).astype("int32") - zero(az, m)
        b = bt(*lead(bshape, i), r, n).astype("int32") - zero(bz, n)
        return te.sum(a * b, axis=r)

    return te.compute(oshape, body, name="anchor")


def _vector(ctx: LowerCtx, name: str, extra: list) -> int | None:
    """Append input `name` to `extra` (None when absent); its position there."""
    if not name:
        return None
    extra.append(ctx.expr(name))
    return len(extra) - 1


def lower_matmul_integer(ctx: LowerCtx, node: Node) -> None:
    """MatMulInteger: the int32 accumulation, as ONNX defines it (2-D or batched)."""
    _int_matmul(ctx, node, *_names(node, (0, 1, 2, 3)), requant=None)


def lower_qlinear_matmul(ctx: LowerCtx, node: Node) -> None:
    """QLinearMatMul(a, s_a, z_a, b, s_b, z_b, s_y, z_y)."""
    a, sa, za, b, sb, zb, sy, zy = _names(node, range(8))
    _int_matmul(ctx, node, a, b, za, zb, requant=(sa, sb, sy, zy))


def _int_matmul(ctx: LowerCtx, node: Node, a: str, b: str, za: str, zb: str,
                requant: tuple[str, str, str, str] | None) -> None:
    out = node.outputs[0]
    oshape, dtype = ctx.shape(out), ctx.dtype(out)
    if len(ctx.shape(a)) < 2 or len(ctx.shape(b)) < 2:
        raise EtchError(f"node {node.name}: {node.op} of a 1-D operand is not built")
    extra: list = []
    slots = [_vector(ctx, n, extra) for n in (za, zb, *(requant or ()))]

    def compute(at: te.Tensor, bt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        get = lambda k: ts[slots[k]] if slots[k] is not None else None
        acc = _matmul_acc(at, bt, oshape, get(0), get(1))
        if requant is None:
            return te.compute(oshape, lambda *i: acc(*i), name="epilogue")
        return te.compute(oshape, lambda *i: _requant(
            acc(*i), _pick(get(2), i[-2]), _pick(get(3), i[-1]), _pick(get(4), 0),
            _pick(get(5), 0), dtype), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(a), ctx.expr(b), *extra], node, "int_matmul"))


def _pick(t: te.Tensor | None, pos: Expr | int) -> Expr | None:
    """A scalar parameter, or its element at `pos` when it is a vector."""
    if t is None:
        return None
    if int(np.prod([int(d) for d in t.shape])) > 1:
        return t(pos)
    return t(*[0] * len(t.shape))


def _requant(acc: Expr, sa: Expr, sb: Expr, sy: Expr, zy: Expr | None, dtype: str) -> Expr:
    """ONNX Runtime's float requantisation (compiler/ops/quant.py `requantize_float`)."""
    f32 = "float32"
    m = sa.astype(f32) * sb.astype(f32) / sy.astype(f32)
    y = tirx.nearbyint(acc.astype(f32) * m).astype("float64")
    return saturate(y + (zy.astype("float64") if zy is not None else 0.0), dtype)


def lower_conv_integer(ctx: LowerCtx, node: Node) -> None:
    """ConvInteger(x, w, x_zero, w_zero): the int32 accumulation."""
    x, w, xz, wz = _names(node, range(4))
    _int_conv(ctx, node, x, w, xz, wz, bias="", requant=None)


def lower_qlinear_conv(ctx: LowerCtx, node: Node) -> None:
    """QLinearConv(x, s_x, z_x, w, s_w, z_w, s_y, z_y, bias)."""
    x, sx, zx, w, sw, zw, sy, zy, bias = _names(node, range(9))
    _int_conv(ctx, node, x, w, zx, zw, bias, requant=(sx, sw, sy, zy))


def _int_conv(ctx: LowerCtx, node: Node, x: str, w: str, xz: str, wz: str, bias: str,
              requant: tuple[str, str, str, str] | None) -> None:
    out = node.outputs[0]
    oshape, dtype = ctx.shape(out), ctx.dtype(out)
    geo = geometry(node.attrs, ctx.shape(x), ctx.shape(w), transpose=False)
    extra: list = []
    slots = [_vector(ctx, n, extra) for n in (xz, wz, bias, *(requant or ()))]

    def compute(xt: te.Tensor, wt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        get = lambda k: ts[slots[k]] if slots[k] is not None else None
        zx_t, zw_t = get(0), get(1)
        acc = accumulate(xt, wt, geo, oshape, "int32",
                         None if zx_t is None else lambda c: _pick(zx_t, 0),
                         None if zw_t is None else lambda oc: _pick(zw_t, oc))

        def finish(*i: Expr) -> Expr:
            v = acc(*i) + (get(2)(i[1]) if get(2) is not None else 0)
            if requant is None:
                return v
            return _requant(v, _pick(get(3), 0), _pick(get(4), i[1]), _pick(get(5), 0),
                            _pick(get(6), 0), dtype)

        return te.compute(oshape, finish, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), ctx.expr(w), *extra], node, "direct_conv"))
