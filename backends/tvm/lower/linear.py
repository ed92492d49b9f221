"""Gemm and MatMul.

Two kernels:
- dense: activation [M, K] times a constant [K, N]. On CPU the weight is packed at compile
  time into [N/nb, K, nb] blocks (the mb x nb register tile from `tiles.dense_tile`), so the
  inner loop reads nb contiguous floats for each k (the vector axis is N) and multiplies them
  by mb broadcast activations. Leading dims of a MatMul's activation
  are flattened into M (a view), and the epilogue maps the flat row back to the full index.
- batched: both operands computed, numpy broadcasting over leading dims (attention's QK^T
  and AV); Gemm with transA/transB and a computed B also lands here.
Both end in the same `epilogue` compute, so a Gemm bias, a fused activation or residual
add runs inside the kernel.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx, accumulator, cast, shape_of
from backends.tvm.lower.epilogue import Epilogue, add_operand
from backends.tvm.schedules import tiles
from compiler.ir import Node


def _unravel(flat: tirx.Expr, dims: tuple[int, ...]) -> list[tirx.Expr]:
    idx = []
    for d in reversed(dims):
        idx.append(tirx.floormod(flat, d) if len(idx) < len(dims) - 1 else flat)
        flat = tirx.floordiv(flat, d)
    return idx[::-1]


def pack_dense(w: np.ndarray, nb: int) -> np.ndarray:
    """[K, N] -> [ceil(N/nb), K, nb], zero-padded along N, in one copy. `w` may be a view
    (a Gemm's transposed weight): each block of nb columns is copied straight from it, which
    for vgg16's 25088x4096 classifier is ~3x faster than transposing, padding and packing
    in three whole-matrix copies."""
    k, n = w.shape
    npad = tiles.padded(n, nb)
    out = np.empty((npad // nb, k, nb), dtype=w.dtype)
    full = n // nb
    if full:
        out[:full] = w[:, :full * nb].reshape(k, full, nb).transpose(1, 0, 2)
    if npad > n:
        out[full] = 0
        out[full, :, :n - full * nb] = w[:, full * nb:]
    return out


def dense(ctx: LowerCtx, node: Node, a: relax.Expr, w: np.ndarray, epi: Epilogue,
          trans_a: bool = False) -> relax.Expr:
    """a [M, K] (or [K, M] with trans_a) times constant w [K, N], then the epilogue.

    On CPU the anchor is [Mp, Np], both padded to the register tile (`tiles.dense_tile`):
    rows past M re-read row M - 1 (no bounds check in the tile), columns past N multiply
    the packed weight's zero padding; the epilogue writes only [M, N]."""
    k, n = (int(d) for d in w.shape)
    m = shape_of(a)[1 if trans_a else 0]
    mb, nb = tiles.dense_tile(m, n, k, ctx.lanes) if ctx.pack else (1, n)
    weight = ctx.array(pack_dense(w, nb) if ctx.pack else w)
    mpad, npad = tiles.padded(m, mb), tiles.padded(n, nb)

    def compute(at: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        r = te.reduce_axis((0, k), "k")

        def load_a(i: tirx.Expr) -> tirx.Expr:
            i = tirx.min(i, m - 1) if mpad > m else i
            return at[r, i] if trans_a else at[i, r]

        acc_t = accumulator(at.dtype)
        if ctx.pack:
            acc = te.compute((mpad, npad), lambda i, j: te.sum(
                cast(load_a(i), acc_t) * cast(wt[j // nb, r, j % nb], acc_t), axis=r),
                name="anchor")
        else:
            acc = te.compute((m, n), lambda i, j: te.sum(
                cast(load_a(i), acc_t) * cast(wt[r, j], acc_t), axis=r), name="anchor")
        return te.compute((m, n), lambda i, j: epi.apply(cast(acc(i, j), at.dtype), (i, j),
                                                         extra), name="epilogue")

    return ctx.emit(compute, [a, weight, *epi.exprs], node, "dense", mb=mb, nb=nb,
                    trans_a=int(trans_a))


def _index(shape: tuple[int, ...], lead: list, row: object, col: object) -> list:
    """An operand's index at the output's leading dims `lead` (numpy broadcasting)."""
    batch = lead[len(lead) - (len(shape) - 2):] if len(shape) > 2 else []
    return [0 if d == 1 else v for d, v in zip(shape[:-2], batch)] + [row, col]


def _panel(bt: te.Tensor, k: int, n: int, nb: int, trans_b: bool) -> te.Tensor:
    """B [..., K, N] (or [..., N, K]) packed at run time as [..., Np/nb, K, nb], zero past N:
    the layout `dense` gets at compile time, so the tile reads nb contiguous floats per k."""
    lead = tuple(int(d) for d in bt.shape[:-2])
    npad = tiles.padded(n, nb)

    def value(*i: tirx.Expr) -> tirx.Expr:
        *bl, jb, r, jj = i
        j = jb * nb + jj
        v = bt(*bl, j, r) if trans_b else bt(*bl, r, j)
        return tirx.if_then_else(j < n, v, tirx.const(0, bt.dtype)) if npad > n else v

    return te.compute((*lead, npad // nb, k, nb), value, name="panel")


def batched(ctx: LowerCtx, node: Node, a: relax.Expr, b: relax.Expr, out_shape: tuple[int, ...],
            epi: Epilogue, trans_a: bool = False, trans_b: bool = False) -> relax.Expr:
    """Broadcast batched matmul of two computed operands (ranks >= 2).

    On CPU each matrix is tiled like `dense` (`tiles.dense_tile`): B is packed into a
    "panel" inside the kernel, rows of A past M re-read row M - 1, and the anchor is
    [..., Mp, Np]; the epilogue writes only the output's [..., M, N]."""
    ashape = shape_of(a)
    bshape = shape_of(b)
    k = ashape[-2] if trans_a else ashape[-1]
    m, n = out_shape[-2:]
    mb, nb = tiles.dense_tile(m, n, k, ctx.lanes) if ctx.pack else (1, n)
    mpad, npad = tiles.padded(m, mb), tiles.padded(n, nb)
    acc_shape = (*out_shape[:-2], mpad, npad)

    def compute(at: te.Tensor, bt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        r = te.reduce_axis((0, k), "k")
        panel = _panel(bt, k, n, nb, trans_b) if ctx.pack else None

        def body(*i: tirx.Expr) -> tirx.Expr:
            lead, mi, ni = list(i[:-2]), i[-2], i[-1]
            mi = tirx.min(mi, m - 1) if mpad > m else mi
            av = at(*_index(ashape, lead, *((r, mi) if trans_a else (mi, r))))
            if panel is None:
                bv = bt(*_index(bshape, lead, *((ni, r) if trans_b else (r, ni))))
            else:
                bv = panel(*_index(bshape, lead, ni // nb, r), ni % nb)
            return te.sum(cast(av, acc_t) * cast(bv, acc_t), axis=r)

        acc_t = accumulator(at.dtype)
        acc = te.compute(acc_shape, body, name="anchor")
        return te.compute(out_shape, lambda *i: epi.apply(cast(acc(*i), at.dtype), i, extra),
                          name="epilogue")

    hints = {"mb": mb, "nb": nb} if ctx.pack else {}
    return ctx.emit(compute, [a, b, *epi.exprs], node, "batch_matmul", **hints)


def matmul(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
           epi: Epilogue) -> relax.Expr:
    """ONNX MatMul (numpy semantics, 1-D operands included) with an epilogue."""
    a_name, b_name = inputs[:2]
    ashape, bshape, oshape = ctx.shape(a_name), ctx.shape(b_name), ctx.shape(out)
    a, b, w = ctx.expr(a_name), ctx.expr(b_name), ctx.const(b_name)
    a_vec, b_vec = len(ashape) == 1, len(bshape) == 1
    if a_vec:
        a, ashape = ctx.reshape(a, (1,) + ashape), (1,) + ashape
    if w is not None and w.ndim == 2:
        lead = ashape[:-1]
        if a_vec:
            epi.index_map = lambda i: [i[1]]
        elif len(lead) > 1:
            epi.index_map = lambda i: _unravel(i[0], lead) + [i[1]]
        y = dense(ctx, node, ctx.reshape(a, (int(np.prod(lead)), ashape[-1])), w, epi)
        return ctx.reshape(y, oshape)
    if b_vec:
        b, bshape = ctx.reshape(b, bshape + (1,)), bshape + (1,)
    full = tuple(np.broadcast_shapes(ashape[:-2], bshape[:-2])) + (ashape[-2], bshape[-1])
    if a_vec or b_vec:
        drop = {len(full) - 2} if a_vec else set()
        drop |= {len(full) - 1} if b_vec else set()
        epi.index_map = lambda i: [v for d, v in enumerate(i) if d not in drop]
    return ctx.reshape(batched(ctx, node, a, b, full, epi), oshape)


def gemm(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
         epi: Epilogue) -> relax.Expr:
    """ONNX Gemm: alpha * A' B' + beta * C, with alpha and beta folded where B, C are constant."""
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
    a, w = ctx.expr(inputs[0]), ctx.const(inputs[1])
    c = inputs[2] if len(inputs) > 2 and inputs[2] else ""
    if alpha != 1.0 and w is None:
        epi.pre.append(("Mul", {}, ["y", add_operand(epi, ctx, data=np.float32(alpha))]))
    if c:
        cdata = ctx.const(c)
        if cdata is not None:
            slot = add_operand(epi, ctx, data=(beta * cdata).astype(cdata.dtype))
        elif beta == 1.0:
            slot = add_operand(epi, ctx, name=c)
        else:
            slot = _scaled_operand(ctx, node, epi, c, beta)
        epi = epi.with_bias(slot)
    if w is not None:
        w = (w.T if trans_b else w) * np.asarray(alpha, w.dtype) if alpha != 1.0 else \
            (w.T if trans_b else w)
        return dense(ctx, node, a, w, epi, trans_a=trans_a)  # a view: packed in one copy
    return batched(ctx, node, a, ctx.expr(inputs[1]), ctx.shape(out), epi, trans_a, trans_b)


def _scaled_operand(ctx: LowerCtx, node: Node, epi: Epilogue, name: str, beta: float) -> int:
    """beta * C for a computed C, as its own small kernel (rounded like the reference's
    beta * C before the add); appended to `epi`'s operands, returns its slot."""
    shape, dtype = ctx.shape(name), ctx.dtype(name)

    def compute(ct: te.Tensor) -> te.Tensor:
        return te.compute(shape, lambda *i: ct(*i) * tirx.const(beta, dtype), name="epilogue")

    epi.operands.slots.append(("t", len(epi.operands.exprs)))
    epi.operands.exprs.append(ctx.emit(compute, [ctx.expr(name)], node, "elementwise"))
    return len(epi.operands.slots) - 1


def lower_gemm(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    ctx.bind(node, gemm(ctx, node, node.inputs, node.attrs, out, Epilogue(ctx.dtype(out))))


def lower_matmul(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    ctx.bind(node, matmul(ctx, node, node.inputs, node.attrs, out, Epilogue(ctx.dtype(out))))


def _einsum_terms(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each input's subscripts and the output's, with "..." spelled out as capital letters
    (numpy's rules: broadcast dims aligned right; implicit output = the subscripts used once,
    in alphabetical order, after the broadcast dims)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    width = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t),
                default=0)
    ell = "".join(chr(ord("A") + k) for k in range(width))
    spelled = [t.replace("...", ell[width - (r - len(t.replace("...", ""))):])
               for t, r in zip(terms, ranks)]
    if arrow:
        return spelled, rhs.replace("...", ell)
    letters = "".join(spelled)
    return spelled, ell + "".join(sorted(c for c in set(letters) if c.islower()
                                         and letters.count(c) == 1))


def lower_einsum(ctx: LowerCtx, node: Node) -> None:
    """Einsum as one reduction: output subscripts index the result, the others are summed."""
    shapes = [ctx.shape(n) for n in node.inputs]
    terms, out_term = _einsum_terms(str(node.attrs["equation"]), [len(s) for s in shapes])
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, d in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), d)
    summed = sorted(set("".join(terms)) - set(out_term))
    oshape = ctx.shape(node.outputs[0])

    def compute(*ts: te.Tensor) -> te.Tensor:
        red = {c: te.reduce_axis((0, sizes[c]), f"r_{c}") for c in summed}

        def body(*i: tirx.Expr) -> tirx.Expr:
            at = {**dict(zip(out_term, i)), **red}
            prod = None
            for t, term, shape in zip(ts, terms, shapes):
                v = t(*[0 if d == 1 else at[c] for c, d in zip(term, shape)])
                prod = v if prod is None else prod * v
            return te.sum(prod, axis=list(red.values())) if red else prod

        acc = te.compute(oshape, body, name="anchor")
        return te.compute(oshape, lambda *i: acc(*i), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(n) for n in node.inputs], node, "einsum"))
