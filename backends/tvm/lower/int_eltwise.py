"""The integer graph's elementwise ops, and QuantizeLinear/DequantizeLinear.

Every formula is the reference's, written in TIR (compiler/ops/etch_int.py is the semantics):
- `requantize(acc, m0, shift, zp, qmin, qmax)`: `compiler.reference.requantize`, the one
  requantisation formula (docs/ARCHITECTURE.md): an int64 product acc * M0, 2^(shift-1)
  added to its magnitude, a logical shift of the magnitude, the sign restored, + zero point,
  saturated. The integer kernels call it in their epilogue (`int_epilogue`), etch.Requantize
  and etch.QAdd here.
- etch.QMul (`lower_qmul`): the exact product of the centred inputs, requantised once.
- etch.QAdd (`qadd`): TFLite's integer add, three requantisations in int64, as the
  reference; the residual step of a fused group (`int_epilogue`) calls it too.
- etch.Table: a gather from the 256-entry table; etch.ChannelTable: from the channel's
  table; etch.Clamp: a clip in x's dtype.
- QuantizeLinear (ONNX): saturate(round_half_even(x / scale) + zero_point), per tensor or
  per axis; DequantizeLinear: float32(x - zero_point) * scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tvm import te, tirx

from backends.tvm.lower.context import LowerCtx, bload, merged_tail
from backends.tvm.lower.fastmath import dtype_of
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_int import INT32_MAX, INT32_MIN, along

Expr = tirx.Expr


def _i64(v: int | Expr) -> Expr:
    return tirx.const(v, "int64") if isinstance(v, int) else v.astype("int64")


def requantize(acc: Expr, m0: int | Expr, shift: int | Expr, zp: int | Expr, qmin: int,
               qmax: int) -> Expr:
    """`compiler.reference.requantize` at one position, as int64 (the cited formula):

        prod = acc * M0;  mag = (|prod| + 2^(shift-1)) >> shift   (no half when shift = 0)
        y = clamp((prod < 0 ? -mag : mag) + zp, qmin, qmax)

    The magnitude is shifted as uint64 (it is >= 0): one vpsrlvq on AVX2. An int32 `acc`
    takes the cheaper equal form of `_magnitude32`."""
    zero = tirx.const(0, "int64")
    if dtype_of(acc) == "int32":
        mag, negative = _magnitude32(acc, m0, shift), acc < tirx.const(0, "int32")
    else:
        prod = _i64(acc) * _i64(m0)
        mag = tirx.shift_right((tirx.abs(prod) + _half(shift)).astype("uint64"),
                               _u64(shift)).astype("int64")
        negative = prod < zero
    y = tirx.Select(negative, -mag, mag) + _i64(zp)
    return tirx.min(tirx.max(y, tirx.const(qmin, "int64")), tirx.const(qmax, "int64"))


def _u64(v: int | Expr) -> Expr:
    return tirx.const(v, "uint64") if isinstance(v, int) else v.astype("uint64")


def _half(shift: int | Expr) -> Expr:
    """2^(shift-1) as uint64, 0 for shift 0 (the rounding term of the formula)."""
    sh, one = _u64(shift), tirx.const(1, "uint64")
    return tirx.Select(sh > tirx.const(0, "uint64"),
                       tirx.shift_left(one, tirx.max(sh, one) - one), tirx.const(0, "uint64"))


def _magnitude32(acc: Expr, m0: int | Expr, shift: int | Expr) -> Expr:
    """(|acc * M0| + half) >> shift for an int32 acc and M0 >= 0, where |acc * M0| =
    |acc| * M0 is a product of two numbers below 2^32 (LLVM sees the zero high halves and
    emits vpmuludq; the general form needs an emulated 64 x 64 multiply on AVX2). |acc| is
    taken in int64, where INT32_MIN's magnitude is representable."""
    absolute = tirx.abs(acc.astype("int64")).astype("uint64")
    # zero-extended (M0 >= 0): with both high halves known zero LLVM multiplies 32 x 32
    m = tirx.const(m0, "uint64") if isinstance(m0, int) else m0.astype("uint32").astype(
        "uint64")
    return tirx.shift_right(absolute * m + _half(shift), _u64(shift)).astype("int64")


def _const(ctx: LowerCtx, node: Node, k: int) -> np.ndarray:
    data = ctx.const(node.inputs[k]) if len(node.inputs) > k and node.inputs[k] else None
    if data is None:
        raise EtchError(f"node {node.name}: {node.op} input {k} must be a constant")
    return data


def _opt_const(ctx: LowerCtx, node: Node, k: int) -> np.ndarray | None:
    return _const(ctx, node, k) if len(node.inputs) > k and node.inputs[k] else None


def lower_requantize(ctx: LowerCtx, node: Node) -> None:
    """etch.Requantize: int32 accumulator -> int8/uint8 (per-tensor or per-channel)."""
    out, acc = node.outputs[0], node.inputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    axis = node.attrs.get("axis")
    params = ctx.data_operands([np.asarray(along(np.asarray(_const(ctx, node, k)), len(shape),
                                                 axis)) for k in (1, 2)])
    zp, lo, hi = (int(node.attrs.get("zero_point", 0)), int(node.attrs["qmin"]),
                  int(node.attrs["qmax"]))

    def compute(at: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            m0, sh = params.load(ts, i)
            return requantize(at(*i), m0, sh, zp, lo, hi).astype(dtype)
        return te.compute(shape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(acc), *params.exprs], node, "elementwise"))


def qadd(xa: Expr, xb: Expr, at: Mapping[str, int]) -> Expr:
    """etch.QAdd at one position, as int64 (the reference's formula): each input centred,
    shifted left and requantised to a common int32 scale, added, requantised to the output.
    Where the step carries a proven straight-line form (`linear`, passes/linear_qadd.py),
    that instead: (a ca + b cb + c) >> k, clamped."""
    if "linear" in at:
        return qadd_linear(_i64(xa), _i64(xb), at, _i64)
    left = int(at.get("left_shift", 20))

    def side(x: Expr, p: str) -> Expr:
        x64 = tirx.shift_left(_i64(x) - _i64(step_number(at[f"{p}_zero"])),
                              tirx.const(left, "int64"))
        return requantize(x64, step_number(at[f"{p}_m0"]), step_number(at[f"{p}_shift"]), 0,
                          INT32_MIN, INT32_MAX)

    return requantize(side(xa, "a") + side(xb, "b"), step_number(at["m0"]),
                      step_number(at["shift"]), step_number(at.get("zero_point", 0)),
                      int(at["qmin"]), int(at["qmax"]))


def step_number(v: int | Expr) -> int | Expr:
    """A step's number: an int (an attribute) or an Expr (read from the kernel's operand)."""
    return v if isinstance(v, Expr) else int(v)


def qadd_linear(xa: Expr, xb: Expr, at: Mapping, const: Callable[[int], Expr]) -> Expr:
    """LinearQAdd's proven form of etch.QAdd, clamp((a ca + c + b cb) >> k, qmin, qmax), in
    that order (each partial sum inside int32, as proven), for scalar int64 (`qadd`) or
    int32 vector (`int_intrin.qadd_vector`) operands; const(v) makes v (an int, or a scalar
    Expr read from the kernel's operand) of their type."""
    k, ca, cb, c = (step_number(v) for v in at["linear"])
    t = xa * const(ca) + const(c) + xb * const(cb)
    return tirx.min(tirx.max(tirx.shift_right(t, const(k)), const(int(at["qmin"]))),
                    const(int(at["qmax"])))


def lower_qadd(ctx: LowerCtx, node: Node) -> None:
    """etch.QAdd: each input rescaled to a common int32 scale, added, requantised."""
    a, b = node.inputs[:2]
    out = node.outputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    ops = ctx.operands([a, b])

    def compute(*ts: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            xa, xb = ops.load(ts, i)
            return qadd(xa, xb, node.attrs).astype(dtype)
        return te.compute(shape, body, name="epilogue")

    ctx.bind(node, ctx.emit(compute, ops.exprs, node, "elementwise"))


def lower_qmul(ctx: LowerCtx, node: Node) -> None:
    """etch.QMul: the exact product of the two centred inputs (|.| < 2^16: int32), requantised
    once (`requantize`). The node's numbers are one operand (`LowerCtx.scalars`), so the
    gates of a network's blocks are one kernel per shape. The trailing axes along which
    neither input is broadcast (a gate's H x W) are one axis, vectorised with a short last
    vector (`etch.vector_tail`): an 8 x 144 x 56 x 56 gate ran one value per step over rows
    of 56, 2.8 ms."""
    a, b = node.inputs[:2]
    out, at = node.outputs[0], node.attrs
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    views = merged_tail([ctx.shape(a), ctx.shape(b)], shape)
    xs = [ctx.reshape(ctx.expr(v), s) for v, s in zip((a, b), views[:2])]
    numbers = ctx.scalars([int(at["a_zero"]), int(at["b_zero"]), int(at["m0"]),
                           int(at["shift"]), int(at.get("zero_point", 0))])
    lo, hi = int(at["qmin"]), int(at["qmax"])

    def compute(xa: te.Tensor, xb: te.Tensor, st: te.Tensor) -> te.Tensor:
        za, zb, m0, shift, zp = (st[k] for k in range(5))

        def body(*i: Expr) -> Expr:
            t = (bload(xa, i).astype("int32") - za.astype("int32")) * \
                (bload(xb, i).astype("int32") - zb.astype("int32"))
            return _requantize_floor(t, m0, shift, zp, lo, hi).astype(dtype)
        return te.compute(views[2], body, name="epilogue")

    y = ctx.emit(compute, [*xs, numbers], node, "elementwise", vector_tail=1)
    ctx.bind(node, ctx.reshape(y, shape))


def _requantize_floor(t: Expr, m0: Expr, shift: Expr, zp: Expr, qmin: int, qmax: int) -> Expr:
    """`requantize` of an int32 t (M0 >= 0) as one floor shift: round half away from zero of
    p / 2^s (p = t M0) is (p + 2^(s-1) - [p < 0]) >> s for s >= 1 (for p < 0 the -1 makes
    the floor of (p + half - 1) / 2^s minus the floor of (|p| + half) / 2^s), and p for
    s = 0. No magnitude and sign select: fewer vector instructions than the general form,
    where LLVM computed the product twice."""
    p = t.astype("int64") * m0
    one = tirx.const(1, "int64")
    half = tirx.shift_right(tirx.shift_left(one, shift), one)
    # -[t < 0] as t's sign bits (M0 >= 0: p has t's sign; TVM rewrites a comparison of
    # the product into a second product in int64), only where s >= 1
    down = tirx.bitwise_and(tirx.shift_right(t, tirx.const(31, "int32")).astype("int64"),
                            tirx.Select(shift > tirx.const(0, "int64"), -one, -one + one))
    y = tirx.shift_right(p + half + down, shift) + zp
    return tirx.min(tirx.max(y, tirx.const(qmin, "int64")), tirx.const(qmax, "int64"))


def lower_table(ctx: LowerCtx, node: Node) -> None:
    """etch.Table: y = table[x - lo] (lo = -128 for int8 x, 0 for uint8)."""
    x, out = node.inputs[0], node.outputs[0]
    table = _const(ctx, node, 1)
    if table.shape != (256,):
        raise EtchError(f"node {node.name}: etch.Table's table has shape {table.shape}")
    lo = -128 if ctx.dtype(x) == "int8" else 0
    shape = ctx.shape(out)

    def compute(xt: te.Tensor, tt: te.Tensor) -> te.Tensor:
        return te.compute(shape, lambda *i: tt[xt(*i).astype("int32") - lo], name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), ctx.array(table)], node, "injective"))


def lower_channel_table(ctx: LowerCtx, node: Node) -> None:
    """etch.ChannelTable: y = table[c, x - lo] for c the index along attr axis; on x86 with
    AVX512-VBMI `schedules.int_tables` renders it as byte permutes per channel plane."""
    x, out = node.inputs[0], node.outputs[0]
    table = _const(ctx, node, 1)
    shape = ctx.shape(out)
    axis = int(node.attrs["axis"]) % len(shape)
    if table.shape != (shape[axis], 256):
        raise EtchError(f"node {node.name}: etch.ChannelTable's table has shape {table.shape}")
    lo = -128 if ctx.dtype(x) == "int8" else 0

    def compute(xt: te.Tensor, tt: te.Tensor) -> te.Tensor:
        return te.compute(shape, lambda *i: tt[i[axis], xt(*i).astype("int32") - lo],
                          name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x), ctx.array(table)], node, "injective",
                            axis=axis))


def lower_clamp(ctx: LowerCtx, node: Node) -> None:
    """etch.Clamp: clip(x, lo, hi) in x's integer dtype."""
    x, out = node.inputs[0], node.outputs[0]
    dtype = ctx.dtype(x)
    lo, hi = tirx.const(int(node.attrs["lo"]), dtype), tirx.const(int(node.attrs["hi"]), dtype)
    shape = ctx.shape(out)

    def compute(xt: te.Tensor) -> te.Tensor:
        return te.compute(shape, lambda *i: tirx.min(tirx.max(xt(*i), lo), hi), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(x)], node, "elementwise"))


def _qdq_params(ctx: LowerCtx, node: Node, rank: int):
    """(scale, zero point) operands of a Quantize/DequantizeLinear, per tensor or per axis."""
    if int(node.attrs.get("block_size", 0)):
        raise EtchError(f"node {node.name}: blocked {node.op} is not built by the TVM backend")
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1)
    scale = _const(ctx, node, 1)
    zero = _opt_const(ctx, node, 2)
    arrays = [along(scale, rank, axis)]
    if zero is not None:
        arrays.append(along(zero, rank, axis))
    return ctx.data_operands([np.asarray(a) for a in arrays])


def round_even(ctx: LowerCtx, v: Expr) -> Expr:
    """v rounded half to even. On the LLVM CPU targets (`ctx.pack`) a float32 is rounded by
    llvm.roundeven (vrndscaleps / frintn), which TIR's loop vectoriser keeps as a vector:
    its nearbyint made the vectorised loop scalar (resnet50's input QuantizeLinear, 150k
    values: 134 -> 16 us per run, one thread, the kernel alone, Zen 4)."""
    if ctx.pack and v.ty.dtype == "float32":
        return tirx.call_llvm_pure_intrin("float32", "llvm.roundeven", v)
    return tirx.nearbyint(v)


def _flat(ctx: LowerCtx, node: Node, shape: tuple) -> tuple[tuple, object]:
    """(shape, input) of a Quantize/DequantizeLinear's kernel: on the CPU targets
    (`ctx.pack`) a per-tensor one runs on its input viewed flat (no copy), so the
    elementwise schedule vectorises it whole; rows that vectors do not divide (densenet121's
    28- and 14-column planes) ran one value per step (its 512 x 28 x 28 DequantizeLinear
    343 -> 25 us per run, one thread, the kernel alone, Zen 4). Else as it is."""
    x = ctx.expr(node.inputs[0])
    per_tensor = all(np.asarray(a).size == 1 for a in
                     [_const(ctx, node, 1), _opt_const(ctx, node, 2)] if a is not None)
    if not ctx.pack or len(shape) < 2 or not per_tensor:
        return shape, x
    flat = (int(np.prod(shape)),)
    return flat, ctx.reshape(x, flat)


def lower_quantize_linear(ctx: LowerCtx, node: Node) -> None:
    """QuantizeLinear: saturate(rint(x / scale) + zp) (rint rounds half to even, as ONNX)."""
    out = node.outputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    if dtype not in ("int8", "uint8", "int16", "uint16"):
        raise EtchError(f"node {node.name}: QuantizeLinear to {dtype} is not built")
    info = np.iinfo(dtype)
    shape, xe = _flat(ctx, node, shape)
    params = _qdq_params(ctx, node, len(shape))

    def compute(xt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            v, ft = xt(*i), xt.dtype
            s, *z = params.load(ts, i)
            y = round_even(ctx, v / s.astype(ft))
            if z:
                y = y + z[0].astype(ft)
            y = tirx.min(tirx.max(y, tirx.const(float(info.min), ft)),
                         tirx.const(float(info.max), ft))
            return y.astype("int32").astype(dtype)
        return te.compute(shape, body, name="epilogue")

    y = ctx.emit(compute, [xe, *params.exprs], node, "elementwise")
    ctx.bind(node, ctx.reshape(y, ctx.shape(out)))


def lower_dequantize_linear(ctx: LowerCtx, node: Node) -> None:
    """DequantizeLinear: float(x - zp) * scale, in the scale's dtype."""
    out = node.outputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    shape, xe = _flat(ctx, node, shape)
    params = _qdq_params(ctx, node, len(shape))

    def compute(xt: te.Tensor, *ts: te.Tensor) -> te.Tensor:
        def body(*i: Expr) -> Expr:
            s, *z = params.load(ts, i)
            v = xt(*i).astype("int32")
            if z:
                v = v - z[0].astype("int32")
            return v.astype(dtype) * s.astype(dtype)
        return te.compute(shape, body, name="epilogue")

    y = ctx.emit(compute, [xe, *params.exprs], node, "elementwise")
    ctx.bind(node, ctx.reshape(y, ctx.shape(out)))


def check_int_dtype(ctx: LowerCtx, node: Node, names: Sequence[str]) -> None:
    """EtchError unless every value in `names` is int8 or uint8 (the integer activations)."""
    for name in names:
        if name and ctx.dtype(name) not in ("int8", "uint8"):
            raise EtchError(f"node {node.name}: {node.op} input %{name} is {ctx.dtype(name)}, "
                            "expected int8 or uint8")
