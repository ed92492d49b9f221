"""etch.Dequant (the weight-only path): the float weight is computed inside the kernel that
reads it, from the integer codes stored in the library.

`lower_dequant` emits nothing when every reader of the Dequant is a Conv, Gemm or MatMul
(plain or as the anchor of an etch.Fused) that takes it as its weight (input 1); those
readers are rendered by the kernels here, whose multiply reads

    W[idx] = (float32(q[idx]) - float32(zero_e[idx])) * (float32(scale_e[idx]) [* mult_e])

(compiler/ops/etch_int.py's formula, element for element) from the packed int8 codes and the
small scale/zero/multiplier tensors. No float weight exists at run time, and the library
holds the codes, not the float weights. Any other reader gets a standalone dequantising
kernel. The kernels have the float kernels' structure and `etch.kind` ("dense", "conv2d",
"depthwise_conv2d"), so `schedules/cpu.py` tiles and vectorises them the same way.

`DEQUANT_LOWERINGS` wraps the float lowerings of Conv, Gemm, MatMul and etch.Fused: a
node whose weight is a deferred Dequant comes here, any other goes to the float lowering.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx, Operands
from backends.tvm.lower.conv import conv_geometry, conv_spec, lower_conv, pack_conv
from backends.tvm.lower.epilogue import Epilogue, add_operand, from_steps
from backends.tvm.lower.fused import lower_fused
from backends.tvm.lower.linear import lower_gemm, lower_matmul, pack_dense
from backends.tvm.schedules import tiles
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_ops import fused_steps, kernel_attrs

Expr = tirx.Expr
ANCHOR_OPS = ("Conv", "Gemm", "MatMul")


# ---- which Dequants are deferred ----------------------------------------------------------
def _reads_as_weight(node: Node, name: str) -> bool:
    if node.op == "etch.Fused":
        k = int(node.attrs.get("num_kernel_inputs", 1))
        return node.attrs.get("kernel", "") in ANCHOR_OPS and k >= 2 and \
            node.inputs[1] == name and name not in node.inputs[2:] + node.inputs[:1]
    return node.op in ANCHOR_OPS and node.inputs[1] == name and \
        name not in node.inputs[2:] + node.inputs[:1]


def deferred(ctx: LowerCtx, node: Node) -> bool:
    """Whether etch.Dequant `node` is rendered inside each of its readers."""
    out = node.outputs[0]
    readers = ctx.graph.consumers().get(out, [])
    consts = all(ctx.const(i) is not None for i in node.inputs if i)
    return consts and bool(readers) and out not in ctx.graph.outputs and \
        all(_reads_as_weight(r, out) for r in readers)


def dequant_of(ctx: LowerCtx, name: str) -> Node | None:
    """The deferred etch.Dequant that produces value `name`, or None."""
    node = ctx.graph.producers().get(name)
    return node if node is not None and node.op == "etch.Dequant" and deferred(ctx, node) \
        else None


# ---- the weight -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DqWeight:
    """A dequantised weight in some layout: codes q and the parameters that broadcast to it
    (`group_size` repeats along `group_axis`)."""

    q: np.ndarray
    scale: np.ndarray
    zero: np.ndarray | None
    mult: np.ndarray | None
    group_axis: int
    group_size: int

    @classmethod
    def of(cls, ctx: LowerCtx, node: Node) -> DqWeight:
        q, scale, zero, mult = (ctx.const(n) if n else None
                                for n in list(node.inputs) + [""] * (4 - len(node.inputs)))
        return cls(q, np.asarray(scale, np.float32), zero, mult,
                   int(node.attrs.get("group_axis", 0)), int(node.attrs.get("group_size", 0)))

    def transposed(self) -> DqWeight:
        """The 2-D weight transposed (Gemm transB)."""
        t = lambda p: None if p is None else np.ascontiguousarray(p.T)
        return DqWeight(t(self.q), t(self.scale), t(self.zero), t(self.mult),
                        1 - self.group_axis, self.group_size)

    def params(self) -> list[np.ndarray]:
        return [p for p in (self.scale, self.zero, self.mult) if p is not None]

    def value(self, code: Expr, idx: list, ts: list) -> Expr:
        """The float weight at original index idx, given its code; ts are the parameter
        tensors in `params()` order. With mult, the groups apply to mult and zero and the
        scale is per output channel; without, to scale and zero."""
        grouped = {"scale": self.mult is None, "zero": True, "mult": True}
        it, loaded = iter(ts), {}
        for name, g in grouped.items():
            if getattr(self, name) is not None:
                loaded[name] = self._at(next(it), idx, g)
        x = code.astype("float32")
        if "zero" in loaded:
            x = x - loaded["zero"].astype("float32")
        s = loaded["scale"]
        if "mult" in loaded:
            s = s * loaded["mult"].astype("float32")
        return x * s

    def _at(self, t: te.Tensor, idx: list, grouped: bool) -> Expr:
        """Parameter t at weight index idx: broadcast dims read 0, the group axis i // G."""
        sub = []
        for d, (i, size) in enumerate(zip(idx, t.shape)):
            if int(size) == 1:
                sub.append(0)
            elif grouped and self.group_size and d == self.group_axis:
                sub.append(i // self.group_size)
            else:
                sub.append(i)
        return t(*sub)


def _operands(ctx: LowerCtx, dw: DqWeight) -> Operands:
    ops = Operands()
    for p in dw.params():
        ops.slots.append(("t", len(ops.exprs)))
        ops.exprs.append(ctx.array(np.ascontiguousarray(p)))
    return ops


# ---- kernels ------------------------------------------------------------------------------
def dq_dense(ctx: LowerCtx, node: Node, a: relax.Expr, dw: DqWeight, epi: Epilogue,
             trans_a: bool = False) -> relax.Expr:
    """a [M, K] (or [K, M]) times the dequantised [K, N] weight, then the epilogue; the
    codes are packed as the float kernel packs its weight."""
    k, n = dw.q.shape
    m = int(a.ty.shape.values[1 if trans_a else 0])
    nb = tiles.dense_nb(n, ctx.lanes) if ctx.pack else n
    npad = tiles.padded(n, nb)
    codes = ctx.array(pack_dense(dw.q, nb) if ctx.pack else dw.q)
    params = _operands(ctx, dw)

    def compute(at: te.Tensor, qt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
        pt, extra = rest[:len(params.exprs)], rest[len(params.exprs):]
        r = te.reduce_axis((0, k), "k")

        def body(i: Expr, j: Expr) -> Expr:
            code = qt[j // nb, r, j % nb] if ctx.pack else qt[r, j]
            w = dw.value(code, [r, tirx.min(j, n - 1)], pt)
            return te.sum((at[r, i] if trans_a else at[i, r]) * w, axis=r)

        acc = te.compute((m, npad), body, name="anchor")
        return te.compute((m, n), lambda i, j: epi.apply(acc(i, j), (i, j), extra),
                          name="epilogue")

    return ctx.emit(compute, [a, codes, *params.exprs, *epi.exprs], node, "dense", nb=nb,
                    trans_a=int(trans_a))


def dq_gemm(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
            epi: Epilogue) -> relax.Expr:
    """ONNX Gemm with a dequantised B (alpha folds into the scales, beta into C)."""
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    dw = DqWeight.of(ctx, dequant_of(ctx, inputs[1]))
    dw = dw.transposed() if attrs.get("transB", 0) else dw
    if alpha != 1.0:
        dw = replace(dw, scale=(dw.scale * np.float32(alpha)).astype(np.float32))
    c = inputs[2] if len(inputs) > 2 and inputs[2] else ""
    if c:
        cdata = ctx.const(c)
        if cdata is None and beta != 1.0:
            raise EtchError(f"node {node.name}: Gemm with beta={beta} and a computed C")
        slot = add_operand(epi, ctx, name=c) if cdata is None else \
            add_operand(epi, ctx, data=(beta * cdata).astype(cdata.dtype))
        epi = epi.with_bias(slot)
    return dq_dense(ctx, node, ctx.expr(inputs[0]), dw, epi, bool(attrs.get("transA", 0)))


def dq_matmul(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
              epi: Epilogue) -> relax.Expr:
    """ONNX MatMul of an activation [..., K] by a dequantised 2-D weight."""
    dw = DqWeight.of(ctx, dequant_of(ctx, inputs[1]))
    ashape, oshape = ctx.shape(inputs[0]), ctx.shape(out)
    if dw.q.ndim != 2:
        raise EtchError(f"node {node.name}: MatMul by a dequantised {dw.q.ndim}-D weight")
    lead = ashape[:-1] or (1,)
    if len(ashape) == 1:
        epi.index_map = lambda i: [i[1]]
    elif len(lead) > 1:
        epi.index_map = lambda i: _unravel(i[0], lead) + [i[1]]
    a = ctx.reshape(ctx.expr(inputs[0]), (int(np.prod(lead)), ashape[-1]))
    return ctx.reshape(dq_dense(ctx, node, a, dw, epi), oshape)


def _unravel(flat: Expr, dims: tuple[int, ...]) -> list[Expr]:
    idx = []
    for d in reversed(dims[1:]):
        idx.append(tirx.floormod(flat, d))
        flat = tirx.floordiv(flat, d)
    return [flat] + idx[::-1]


def dq_conv(ctx: LowerCtx, node: Node, inputs: list[str], attrs: dict, out: str,
            epi: Epilogue) -> relax.Expr:
    """ONNX Conv (1-D, 2-D) with a dequantised weight: the float direct conv (zero-padded
    input block, anchor, epilogue; weight codes packed [OC/ocb, C/g, KH, KW, ocb])."""
    dw = DqWeight.of(ctx, dequant_of(ctx, inputs[1]))
    xshape, oshape = ctx.shape(inputs[0]), ctx.shape(out)
    sp = conv_spec(attrs, xshape, dw.q.shape, oshape)
    if len(inputs) > 2 and inputs[2]:
        bias = ctx.const(inputs[2])
        if bias is None:
            raise EtchError(f"conv bias %{inputs[2]} is computed; etch expects a constant")
        epi = epi.with_bias(add_operand(epi, ctx, data=bias.reshape((-1,) + (1,) * (
            len(oshape) - 2))))
    if len(oshape) == 3:
        epi.index_map = lambda i: [i[0], i[1], i[3]]
        dw = replace(dw, q=dw.q[:, :, None], **{k: getattr(dw, k)[:, :, None]
                                                for k in ("scale", "zero", "mult")
                                                if getattr(dw, k) is not None})
    x = ctx.reshape(ctx.expr(inputs[0]), (sp.n, sp.c, sp.h, sp.w))
    return ctx.reshape(_dq_conv2d(ctx, node, x, sp, dw, epi), oshape)


def _dq_conv2d(ctx: LowerCtx, node: Node, x: relax.Expr, sp, dw: DqWeight,
               epi: Epilogue) -> relax.Expr:
    ocpg, icg = sp.oc // sp.groups, sp.c // sp.groups
    ocb, vw, owp, ph, pw = conv_geometry(ctx, sp)
    depthwise = icg == 1
    (sh, sw), (dh, dw_) = sp.stride, sp.dilation
    codes = ctx.array(pack_conv(dw.q, ocb) if ocb > 1 else dw.q)
    params = _operands(ctx, dw)

    def compute(xt: te.Tensor, qt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
        pt, extra = rest[:len(params.exprs)], rest[len(params.exprs):]

        def pad_value(n: Expr, c: Expr, i: Expr, j: Expr) -> Expr:
            hi, wi = i - sp.pad_top, j - sp.pad_left
            inside = tirx.all(hi >= 0, hi < sp.h, wi >= 0, wi < sp.w)
            return tirx.if_then_else(inside, xt[n, c, hi, wi], tirx.const(0, xt.dtype))

        pad = te.compute((sp.n, sp.c, ph, pw), pad_value, name="pad")
        rc = te.reduce_axis((0, icg), "rc")
        ry, rx = te.reduce_axis((0, sp.kh), "ry"), te.reduce_axis((0, sp.kw), "rx")
        ic = 0 if depthwise else rc

        def body(n: Expr, o: Expr, i: Expr, j: Expr) -> Expr:
            c = o // ocpg * icg + ic if sp.groups > 1 else ic
            code = qt[o // ocb, ic, ry, rx, o % ocb] if ocb > 1 else qt[o, ic, ry, rx]
            w = dw.value(code, [o, ic, ry, rx], pt)
            return te.sum(pad[n, c, i * sh + ry * dh, j * sw + rx * dw_] * w,
                          axis=[ry, rx] if depthwise else [rc, ry, rx])

        acc = te.compute((sp.n, sp.oc, sp.oh, owp), body, name="anchor")
        return te.compute((sp.n, sp.oc, sp.oh, sp.ow), lambda n, o, i, j: epi.apply(
            acc(n, o, i, j), (n, o, i, j), extra), name="epilogue")

    kind = "depthwise_conv2d" if depthwise else "conv2d"
    return ctx.emit(compute, [x, codes, *params.exprs, *epi.exprs], node, kind, ocb=ocb,
                    vw=vw)


# ---- lowerings ----------------------------------------------------------------------------
DQ_ANCHORS = {"Conv": dq_conv, "Gemm": dq_gemm, "MatMul": dq_matmul}
FLOAT_LOWERINGS = {"Conv": lower_conv, "Gemm": lower_gemm, "MatMul": lower_matmul,
                   "etch.Fused": lower_fused}


def lower_dequant(ctx: LowerCtx, node: Node) -> None:
    """etch.Dequant: nothing where its readers compute it (see the module docstring), else
    a kernel that dequantises the codes at run time."""
    if deferred(ctx, node):
        return
    dw = DqWeight.of(ctx, node)
    shape = ctx.shape(node.outputs[0])
    params = _operands(ctx, dw)

    def compute(qt: te.Tensor, *pt: te.Tensor) -> te.Tensor:
        return te.compute(shape, lambda *i: dw.value(qt(*i), list(i), pt), name="epilogue")

    ctx.bind(node, ctx.emit(compute, [ctx.expr(node.inputs[0]), *params.exprs], node,
                            "elementwise"))


def _anchor_dq(ctx: LowerCtx, node: Node) -> None:
    """Conv/Gemm/MatMul: the dequantising kernel where the weight is a deferred Dequant."""
    if len(node.inputs) > 1 and dequant_of(ctx, node.inputs[1]) is not None:
        out = node.outputs[0]
        ctx.bind(node, DQ_ANCHORS[node.op](ctx, node, node.inputs, node.attrs, out,
                                           Epilogue(ctx.dtype(out))))
    else:
        FLOAT_LOWERINGS[node.op](ctx, node)


def _fused_dq(ctx: LowerCtx, node: Node) -> None:
    """etch.Fused: the dequantising anchor where its weight is a deferred Dequant."""
    kernel = node.attrs.get("kernel", "")
    k = int(node.attrs.get("num_kernel_inputs", 1))
    if kernel in DQ_ANCHORS and k >= 2 and dequant_of(ctx, node.inputs[1]) is not None:
        out = node.outputs[0]
        epi = from_steps(ctx, node, fused_steps(node.attrs), ctx.dtype(out))
        ctx.bind(node, DQ_ANCHORS[kernel](ctx, node, node.inputs[:k], kernel_attrs(
            node.attrs), out, epi))
    else:
        lower_fused(ctx, node)


DEQUANT_LOWERINGS = {"etch.Dequant": lower_dequant, "Conv": _anchor_dq, "Gemm": _anchor_dq,
                     "MatMul": _anchor_dq, "etch.Fused": _fused_dq}
