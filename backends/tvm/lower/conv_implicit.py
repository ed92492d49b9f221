"""Convolution as an implicit GEMM over the padded input, rendered where
`choose_conv_algorithm` recorded `conv_algorithm = "implicit_gemm"` (stride 1, one group).

With stride 1, the input a tap (c, ky, kx) multiplies into the output at (oy, ox) is
pad[c, oy + ky*dh, ox + kx*dw]. Numbering positions along the *padded* width PW,
q = oy * PW + ox, that is the flat padded input at c*PH*PW + ky*dh*PW + kx*dw + q: for every
reduction step, the positions are one contiguous run of the input, so the GEMM reads its
vectors straight from the padded input (no patch panel is packed; the im2col kernel spent
~20% of a 256->256 3x3 14x14 layer on that gather). The price: the PW - OW positions at
the end of each row are computed and dropped ((KW-1)*dw / OW of the work, which the pass
bounds). Two kernels:
- "conv_pad": the zero-padded input [N, C, PH, PW], with rows added past PH so that the
  last column block's reads stay inside it; viewed flat as [N, C*PH*PW];
- "conv_implicit": "anchor" [N, OCp, Qp] accumulated in an ocb x vw register tile over
  (c, ky, kx), the weight packed at compile time to [OCp/ocb, C*KH*KW, ocb] as for
  `conv_gemm`; "epilogue" [N, OC, OH, OW] (bias, activation, residual) reading q = oy*PW+ox.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te

from backends.tvm.lower.context import LowerCtx, accumulator, cast
from backends.tvm.lower.conv import ConvSpec, _padded_input
from backends.tvm.lower.conv_gemm import pack_weight
from backends.tvm.lower.epilogue import Epilogue
from backends.tvm.schedules import tiles
from compiler.ir import Node


def fits(sp: ConvSpec) -> bool:
    """Whether the implicit GEMM computes this convolution: stride 1, one group, no
    upsampling."""
    return sp.groups == 1 and sp.upsample == (1, 1) and sp.stride == (1, 1)


def geometry(sp: ConvSpec, lanes: int) -> tuple[int, int, int, int, int]:
    """(ocb, vw, padded width PW, padded height PH with the rows the last block reads,
    column blocks) of the implicit GEMM of `sp`."""
    (dh, dw), reduce = sp.dilation, sp.c * sp.kh * sp.kw
    pw = sp.ow + (sp.kw - 1) * dw
    ocb, vw = tiles.gemm_tile(sp.oc, sp.oh * pw, reduce, lanes)
    blocks = -(-(sp.oh * pw) // vw)
    reach = (sp.kh - 1) * dh * pw + (sp.kw - 1) * dw + blocks * vw  # last read + 1
    ph = max(sp.oh + (sp.kh - 1) * dh, -(-reach // pw))
    return ocb, vw, pw, ph, blocks


def conv_implicit(ctx: LowerCtx, node: Node, x: relax.Expr, w: np.ndarray, sp: ConvSpec,
                  epi: Epilogue) -> relax.Expr:
    """Emit the implicit-GEMM convolution of x [N, C, H, W] with constant w [OC, C, KH, KW];
    returns [N, OC, OH, OW]."""
    ocb, vw, pw, ph, blocks = geometry(sp, ctx.lanes)
    if (sp.pad_top, sp.pad_left, pw) == (0, 0, sp.w) and ph <= sp.h:
        padded, ph = x, sp.h  # the input is its own padded form
    else:
        padded = ctx.emit(lambda xt: _padded_input(xt, sp, ph, pw, 1), [x], node, "conv_pad")
    flat = ctx.reshape(padded, (sp.n, sp.c * ph * pw))
    weight = pack_weight(w, ocb)
    ocp = weight.shape[0] * ocb
    (dh, dw), plane, taps = sp.dilation, ph * pw, sp.kh * sp.kw
    acc_t = accumulator(w.dtype)

    def compute(xt: te.Tensor, wt: te.Tensor, *extra: te.Tensor) -> te.Tensor:
        rc = te.reduce_axis((0, sp.c), "rc")
        ry = te.reduce_axis((0, sp.kh), "ry")
        rx = te.reduce_axis((0, sp.kw), "rx")
        acc = te.compute((sp.n, ocp, blocks * vw), lambda n, o, q: te.sum(
            cast(xt[n, rc * plane + ry * (dh * pw) + rx * dw + q], acc_t)
            * cast(wt[o // ocb, rc * taps + ry * sp.kw + rx, o % ocb], acc_t),
            axis=[rc, ry, rx]), name="anchor")
        return te.compute((sp.n, sp.oc, sp.oh, sp.ow), lambda n, o, y, c: epi.apply(
            cast(acc[n, o, y * pw + c], xt.dtype), (n, o, y, c), extra), name="epilogue")

    return ctx.emit(compute, [flat, ctx.array(weight), *epi.exprs], node, "conv_implicit",
                    ocb=ocb, vw=vw)

