"""`etch.Fused`: an anchor kernel (Conv, ConvTranspose, Gemm, MatMul, or none) whose
elementwise epilogue runs inside the same PrimFunc (see compiler/ops/etch_ops.py); or an
AveragePool or MaxPool reading its input through a prologue (`passes/fuse_prologue.py`).

The fusion pass decided the group; this only renders it. The anchor's builder takes the
epilogue and evaluates it in its final `te.compute`, so the schedule sees one kernel: the
anchor's register tile is finished (bias, activation, residual add) before it is stored.
"""

from __future__ import annotations

from tvm import te

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.conv import conv, conv_transpose
from backends.tvm.lower.epilogue import Epilogue, from_steps
from backends.tvm.lower.linear import gemm, matmul
from backends.tvm.lower.pool import pool_anchor
from compiler.errors import EtchError
from compiler.ir import Node
from compiler.ops.etch_ops import fused_steps, kernel_attrs

ANCHORS = {"Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
           "AveragePool": pool_anchor, "MaxPool": pool_anchor}  # a pool: a prologue only


def lower_fused(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    kernel = node.attrs.get("kernel", "")
    k = int(node.attrs.get("num_kernel_inputs", 1))
    epi = from_steps(ctx, node, fused_steps(node.attrs), ctx.dtype(out))
    if not kernel:
        ctx.bind(node, _chain(ctx, node, epi))
        return
    if kernel not in ANCHORS:
        raise EtchError(f"node {node.name}: etch.Fused anchor {kernel!r} is not built "
                        f"(anchors: {', '.join(ANCHORS)})")
    anchor = ANCHORS[kernel]
    ctx.bind(node, anchor(ctx, node, node.inputs[:k], kernel_attrs(node.attrs), out, epi))


def _chain(ctx: LowerCtx, node: Node, epi: Epilogue):
    """A pure elementwise chain: the steps applied to input 0, broadcast to the output."""
    shape = ctx.shape(node.outputs[0])
    first = ctx.operands([node.inputs[0]])

    def compute(*ts: te.Tensor) -> te.Tensor:
        head = ts[:len(first.exprs)]
        rest = ts[len(first.exprs):]
        return te.compute(shape, lambda *i: epi.apply(first.load(head, i)[0], i, rest),
                          name="epilogue")

    return ctx.emit(compute, [*first.exprs, *epi.exprs], node, "elementwise")
