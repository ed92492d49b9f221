"""etch.QGemm: exact int32 dot products, and the etch.Requantize that reads one in its kernel.

Kernels (compiler/ops/etch_int.py has the semantics):
- "qdense" (CPU, constant weights whose codes, with w_zero and w_mult folded in at compile
  time, fit int8): the weight is packed [N/NL, K/4, NL, 4] so that one x86 dot-product step
  (`schedules/int_intrin.py`: vpdpbusd, or vpmaddubsw + vpmaddwd) takes 4 activations
  against NL output columns; `schedules/int_cpu.py` swaps this TE kernel for a hand-scheduled
  one on x86. The steps multiply uint8 by int8, so activations are taken
  in the "u8 domain" (uint8 as they are, int8 as a + 128, an xor of the sign bit) and the
  zero point moves into the bias at compile time:
      sum_k (a_k - z) w_kn + bias_n = sum_k u_k w_kn + (bias_n - z_u sum_k w_kn).
  Raw partial sums are bounded by K * 255 * max|w| < 2^31 (checked), so int32 never wraps.
- "qgemm" (anything else: computed operands, wide folded weights, CUDA): centred int32
  products (int64 when the bound does not fit int32), numpy broadcasting.
Both end in `int_epilogue.IntEpilogue`: + bias, then, for the anchor of an etch.QFused
group, the group's output unit (requantise, table, residual add), so the int32 tensor is
never stored; a bare etch.QGemm stores the int32 accumulator.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.fastmath import dtype_of
from backends.tvm.lower.int_epilogue import IntOut, int_epilogue, kernel_hints
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_int import INT32_MAX

Expr = tirx.Expr
KI = 4  # activations per intrinsic step (4 bytes: one int32 broadcast)


def acc_bound(wc: np.ndarray, bias: np.ndarray | None, axis: int) -> np.ndarray:
    """Per output channel, a bound on |accumulator|: 255 * sum |w| + |bias|."""
    other = tuple(d for d in range(wc.ndim) if d != axis)
    bound = 255 * np.abs(wc).sum(axis=other)
    return bound + (0 if bias is None else np.abs(bias.astype(np.int64)).reshape(-1))


# ---- weights ------------------------------------------------------------------------------
def fold_weight(w: np.ndarray, w_zero: np.ndarray | None, w_mult: np.ndarray | None,
                group_size: int, axis: int) -> np.ndarray:
    """(w - w_zero) * w_mult expanded, in int64: the per-k weights of the integer dot product
    (sum_g m_g sum_{k in g} a_k w_k = sum_k a_k (m_g(k) w_k) exactly). `axis` is the output
    channel axis of w (QGemm [K, N]: 1; QConv [O, C/g, ...]: 0). Plain 8-bit codes stay
    int16 (every consumer widens its sums): vgg16's 102M-weight layer is 200 MB, not 800."""
    plain = w_zero is None and w_mult is None and w.dtype.itemsize == 1
    wc = w.astype(np.int16 if plain else np.int64)
    shape = [1] * w.ndim
    shape[axis] = -1
    if w_zero is not None:
        z = np.asarray(w_zero, np.int64)
        wc = wc - (z.reshape(()) if z.size == 1 else z.reshape(shape))
    if w_mult is not None:
        m = np.repeat(np.asarray(w_mult, np.int64), group_size, axis=1 - axis)
        wc = wc * m.reshape(m.shape + (1,) * (w.ndim - 2))
    return wc


def small_int(data: np.ndarray) -> np.ndarray:
    """int64 numbers in the narrowest of int8/int16/int32 that holds them."""
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if data.size == 0 or (data.min() >= info.min and data.max() <= info.max):
            return data.astype(dt)
    raise EtchError("internal: integer weights beyond int32")


def u8_zero(a_dtype: str, zero: int) -> int:
    """The zero point in the u8 domain (int8 activations are taken as a + 128)."""
    return zero + 128 if a_dtype == "int8" else zero


def to_u8(v: Expr) -> Expr:
    """An int8/uint8 value in the u8 domain: int8 a -> a + 128 (flip the sign bit)."""
    if dtype_of(v) == "uint8":
        return v
    return tirx.bitwise_xor(v, tirx.const(-128, "int8")).astype("uint8")


def fast_weight_ok(wc: np.ndarray) -> bool:
    """Codes that the u8 x s8 intrinsics take: int8, and K * 255 * max|w| inside int32."""
    if wc.size == 0 or wc.min() < -128 or wc.max() > 127:
        return False
    k = wc.size // wc.shape[0]
    return k * 255 * int(np.abs(wc).max()) <= INT32_MAX


def pair_safe(packed: np.ndarray) -> bool:
    """Whether vpmaddubsw's int16 pair sums cannot saturate: for every adjacent pair of
    weights (w0, w1) of one output (the last axis of `packed` holds 4 k's), u0 w0 + u1 w1
    with u in [0, 255] stays inside [-32768, 32767]. Then vpmaddubsw is exact."""
    pairs = packed.reshape(-1, 2)
    for i in range(0, len(pairs), PAIR_CHUNK):  # int16 in cache-sized chunks
        w = pairs[i:i + PAIR_CHUNK].astype(np.int16)
        hi, lo = np.maximum(w, 0), np.minimum(w, 0)
        if 255 * int((hi[:, 0] + hi[:, 1]).max()) > 32767 or \
                255 * int((lo[:, 0] + lo[:, 1]).min()) < -32768:
            return False
    return True


PAIR_CHUNK = 1 << 16


def vector_lanes(ctx: LowerCtx) -> int:
    """int32 outputs per intrinsic: a 512-bit vector with AVX-512, else 256-bit."""
    return 16 if ctx.lanes >= 16 else 8


# ---- QGemm --------------------------------------------------------------------------------
def pack_qdense(wc: np.ndarray, nl: int) -> np.ndarray:
    """[K, N] int8 -> [N/nl, K/4, nl, 4], zero-padded along K and N."""
    k, n = wc.shape
    kp, np_ = -(-k // KI) * KI, -(-n // nl) * nl
    w = np.zeros((kp, np_), np.int8)
    w[:k, :n] = wc
    return np.ascontiguousarray(w.reshape(kp // KI, KI, np_ // nl, nl).transpose(2, 0, 3, 1))


def qdense(ctx: LowerCtx, dst: IntOut, a: relax.Expr, a_dtype: str, m: int, zero: int,
           wc: np.ndarray, bias: np.ndarray | None) -> relax.Expr | None:
    """The fast kernel for a [M, K] x constant [K, N] -> [M, N], then dst's output unit;
    None when the weights do not fit it."""
    if not ctx.pack or not fast_weight_ok(wc):
        return None
    k, n = wc.shape
    nl = vector_lanes(ctx)
    packed = pack_qdense(wc.astype(np.int8), nl)
    nb, kb = packed.shape[0], packed.shape[1]
    corr = -u8_zero(a_dtype, zero) * wc.sum(axis=0)
    epi = int_epilogue(ctx, dst, corr + (0 if bias is None else bias.astype(np.int64)), 2, 1,
                       (m, n), channels=n)
    direct = a_dtype == "uint8" and k % KI == 0

    def compute(at: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        if direct:
            src = at
        else:
            src = te.compute((m, kb * KI), lambda i, j: tirx.if_then_else(
                j < k, to_u8(at(i, tirx.min(j, k - 1))), tirx.const(0, "uint8")), name="pack")
        ko, ki = te.reduce_axis((0, kb), "ko"), te.reduce_axis((0, KI), "ki")
        acc = te.compute((m, nb, nl), lambda i, jo, ji: te.sum(
            src[i, ko * KI + ki].astype("int32") * wt[jo, ko, ji, ki].astype("int32"),
            axis=[ko, ki]), name="anchor")
        return epi.compute((m, n), lambda i, j: acc(i, j // nl, j % nl), extra)

    return ctx.emit(compute, [a, ctx.array(packed), *epi.exprs], dst.node, "qdense", nl=nl,
                    pair_safe=int(pair_safe(packed)),
                    **kernel_hints(epi, acc_bound(wc, bias, 1)))


# ---- two activations -------------------------------------------------------------------
def to_s8(v: Expr) -> Expr:
    """An int8/uint8 value in the s8 domain: uint8 b -> b - 128 (flip the sign bit)."""
    if dtype_of(v) == "int8":
        return v
    return tirx.bitwise_xor(v, tirx.const(128, "uint8")).astype("int8")


def batch_fits(k: int) -> bool:
    """Whether qbatch's int32 partial sums cannot wrap: sum u*s, the two zero-point
    corrections and the constant term are each at most K * 255 * 128 in magnitude."""
    return 4 * k * 255 * 128 <= INT32_MAX


def qbatch(ctx: LowerCtx, dst: IntOut, names: tuple[str, str], zeros: tuple,
           bias: np.ndarray | None) -> relax.Expr | None:
    """The "qbatch" kernel for two int8/uint8 activations [.., M, K] x [.., K, N] with the
    same leading axes and scalar zero points (attention's QK^T and AV), then dst's output
    unit; None when it does not apply. In the u8 x s8 domains of the dot-product steps
    (a as u8, b as s8, zero points moved with them):
        sum_k (a - za)(b - zb) = sum u s - zs sum_k u - zu sum_k s + K zu zs,
    the x86 kernel (`schedules/int_batched.py`) packs b per batch as the weights of
    "qdense" and computes the two sums; the constant K zu zs is the epilogue's bias (with
    the op's own bias), so the TE kernel here computes the product less that constant."""
    a_name, b_name = names
    zero, b_zero, w_mult = zeros
    ashape, bshape = ctx.shape(a_name), ctx.shape(b_name)
    adt, bdt = ctx.dtype(a_name), ctx.dtype(b_name)
    if not ctx.pack or w_mult is not None or {adt, bdt} - {"int8", "uint8"} or \
            len(ashape) != len(bshape) or ashape[:-2] != bshape[:-2] or \
            (b_zero is not None and b_zero.size != 1) or not batch_fits(ashape[-1]):
        return None
    *lead, m, k = ashape
    n, batch = bshape[-1], int(np.prod(lead, dtype=np.int64))
    za, zb = (0 if z is None else int(z.reshape(())) for z in (zero, b_zero))
    zu, zs = u8_zero(adt, za), zb - 128 if bdt == "uint8" else zb
    const = k * zu * zs
    total = np.full(n, const, np.int64) + (0 if bias is None else bias.astype(np.int64))
    epi = int_epilogue(ctx, dst, total, 3, 2, (batch, m, n), channels=n)

    # the zero points, read from one operand (`LowerCtx.scalars`): a, b, the u8 domain's
    # zu, the s8 domain's zs (the x86 kernel's), and K zu zs
    numbers = ctx.scalars([za, zb, zu, zs, const])

    def compute(at: te.Tensor, bt: te.Tensor, st: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        r = te.reduce_axis((0, k), "k")
        z = [st[j].astype("int32") for j in range(5)]
        acc = te.compute((batch, m, n), lambda i, p, q: te.sum(
            (at[i, p, r].astype("int32") - z[0]) * (bt[i, r, q].astype("int32") - z[1]),
            axis=r), name="anchor")
        return epi.compute((batch, m, n), lambda *i: acc(*i) - z[4], extra)

    bound = np.full(n, k * 255 * 255, np.int64) + \
        (0 if bias is None else np.abs(bias.astype(np.int64)))
    a = ctx.reshape(ctx.expr(a_name), (batch, m, k))
    b = ctx.reshape(ctx.expr(b_name), (batch, k, n))
    got = ctx.emit(compute, [a, b, numbers, *epi.exprs], dst.node, "qbatch",
                   nl=vector_lanes(ctx), pair_safe=0, **kernel_hints(epi, bound))
    return ctx.reshape(got, ctx.shape(dst.value))


def qgemm_generic(ctx: LowerCtx, dst: IntOut, a: relax.Expr, w: relax.Expr, wdata,
                  zero: np.ndarray | None, w_zero: np.ndarray | None, w_mult, gs: int,
                  bias: np.ndarray | None, out_shape: tuple) -> relax.Expr:
    """acc[..., m, n] = sum_k (a - a_zero) * w'[..., k, n] with numpy broadcasting, where w' is
    the folded constant weight or (w - w_zero) * w_mult[k // G, n] computed in the kernel."""
    ashape = tuple(int(d) for d in a.ty.shape.values)
    wshape = tuple(int(d) for d in w.ty.shape.values)
    k = ashape[-1]
    rank = len(out_shape)
    epi = int_epilogue(ctx, dst, bias, rank, rank - 1, out_shape)
    wide = k * 255 * _wmax(wdata, w_mult) + (0 if bias is None else int(np.abs(bias).max()))
    acc_t = "int32" if wide <= INT32_MAX else "int64"
    extra_ops = ctx.data_operands([np.asarray(p) for p in (zero, w_zero, w_mult)
                                   if p is not None])
    n_zero, n_wz = int(zero is not None), int(w_zero is not None)

    def compute(at: te.Tensor, wt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
        consts, tail = rest[:len(extra_ops.exprs)], rest[len(extra_ops.exprs):]
        r = te.reduce_axis((0, k), "k")

        def value(t: te.Tensor, shape: tuple, lead: list, row, col) -> Expr:
            batch = lead[len(lead) - (len(shape) - 2):] if len(shape) > 2 else []
            idx = [0 if d == 1 else v for d, v in zip(shape[:-2], batch)] + [row, col]
            return t(*idx).astype(acc_t)

        def body(*i: Expr) -> Expr:
            lead, mi, ni = list(i[:-2]), i[-2], i[-1]
            params = extra_ops.load(consts, [r, ni], lambda t, ix: _param_at(t, ix, gs))
            av = value(at, ashape, lead, mi, r)
            wv = value(wt, wshape, lead, r, ni)
            if n_zero:
                av = av - params[0].astype(acc_t)
            if n_wz:
                wv = wv - params[n_zero].astype(acc_t)
            if w_mult is not None:
                wv = wv * params[-1].astype(acc_t)
            return te.sum(av * wv, axis=r)

        acc = te.compute(out_shape, body, name="anchor")
        return epi.compute(out_shape, acc, tail)

    return ctx.emit(compute, [a, w, *extra_ops.exprs, *epi.exprs], dst.node, "qgemm")


def _param_at(t: te.Tensor, ix: list, gs: int) -> Expr:
    """A zero point / multiplier operand at reduction index k = ix[0], column n = ix[1]:
    [N] zero points by column, [K/G, N] multipliers by group and column."""
    if len(t.shape) == 1:
        return t[ix[1]] if int(t.shape[0]) > 1 else t[0]
    return t[ix[0] // gs, ix[1]]


def _wmax(wdata: np.ndarray | None, w_mult: np.ndarray | None) -> int:
    if wdata is not None:
        return int(np.abs(wdata).max(initial=0))
    return 255 * (int(np.abs(w_mult).max()) if w_mult is not None else 1)


def _inputs(ctx: LowerCtx, names: list[str]) -> list[np.ndarray | None]:
    names = list(names) + [""] * (6 - len(names))
    return [ctx.const(n) if n else None for n in names[2:6]]


def qgemm(ctx: LowerCtx, dst: IntOut, inputs: list[str], attrs: dict) -> None:
    """etch.QGemm(inputs; attrs), then dst's output unit: the fast kernel for a constant 2-D
    weight where it applies, else the generic one."""
    node = dst.node
    a_name, w_name = inputs[:2]
    bias, zero, w_zero, w_mult = _inputs(ctx, inputs)
    for name, data in zip(inputs[2:6], (bias, zero, w_zero, w_mult)):
        if name and data is None:
            raise EtchError(f"node {node.name}: etch.QGemm input %{name} must be a constant")
    if zero is not None and zero.size != 1:
        raise EtchError(f"node {node.name}: etch.QGemm's a_zero must be a scalar")
    gs = int(attrs.get("group_size", 0))
    ashape, oshape = ctx.shape(a_name), ctx.shape(dst.value)
    w = ctx.const(w_name)
    if len(ashape) < 2 or len(ctx.shape(w_name)) < 2:
        raise EtchError(f"node {node.name}: etch.QGemm of a 1-D operand is not built")
    a = ctx.expr(a_name)
    if w is not None and w.ndim == 2:
        wc = fold_weight(w, w_zero, w_mult, gs, 1)
        m = int(np.prod(ashape[:-1]))
        flat = ctx.reshape(a, (m, ashape[-1]))
        z = 0 if zero is None else int(zero.reshape(()))
        got = qdense(ctx, dst, flat, ctx.dtype(a_name), m, z, wc, bias)
        if got is not None:
            ctx.bind(node, ctx.reshape(got, oshape))
            return
        wexpr, w_zero, w_mult, wdata = ctx.array(small_int(wc)), None, None, wc
    else:
        got = qbatch(ctx, dst, (a_name, w_name), (zero, w_zero, w_mult), bias)
        if got is not None:
            ctx.bind(node, got)
            return
        wexpr, wdata = ctx.expr(w_name), None
    ctx.bind(node, qgemm_generic(ctx, dst, a, wexpr, wdata, zero, w_zero, w_mult, gs, bias,
                                 oshape))


def lower_qgemm(ctx: LowerCtx, node: Node) -> None:
    """A bare etch.QGemm: the int32 accumulator."""
    qgemm(ctx, IntOut(node, None, node.outputs[0]), list(node.inputs), node.attrs)
