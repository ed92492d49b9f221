"""The prologue of an `etch.Fused` convolution (`passes/fuse_prologue.py` recorded it): the
anchor's input 0 is the channel concatenation of some of the node's inputs
(`concat_inputs`) with elementwise steps applied (`prologue`). The GEMM convolution reads it
through the copy it packs its panels with (`conv_gemm._panel`); the pass records prologues on
pointwise convolutions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvm import relax, te, tirx

from backends.tvm.lower.context import LowerCtx
from backends.tvm.lower.epilogue import Epilogue, from_steps
from backends.tvm.lower.fastmath import dtype_of
from compiler.ir import Node
from compiler.ops.etch_ops import concat_inputs, prologue_steps


@dataclass
class Prologue:
    """The parts (concatenated along axis 1, at channel `offsets`), the steps, the shape."""

    parts: list[relax.Expr]
    offsets: list[int]
    steps: Epilogue
    shape: tuple[int, ...]

    @staticmethod
    def of(ctx: LowerCtx, node: Node) -> Prologue | None:
        """The node's prologue, None where it has neither a concat nor steps."""
        parts = concat_inputs(node.attrs)
        steps = prologue_steps(node.attrs)
        if parts == [0] and not steps:
            return None
        names = [node.inputs[i] for i in parts]
        shapes = [ctx.shape(n) for n in names]
        offsets = [0]
        for s in shapes[:-1]:
            offsets.append(offsets[-1] + s[1])
        shape = (shapes[0][0], offsets[-1] + shapes[-1][1], *shapes[0][2:])
        return Prologue([ctx.expr(n) for n in names], offsets,
                        from_steps(ctx, node, steps, ctx.dtype(names[0])), tuple(shape))

    @property
    def exprs(self) -> list[relax.Expr]:
        """The kernel inputs it reads: the parts, then the steps' operands."""
        return [*self.parts, *self.steps.exprs]

    def value(self, tensors: Sequence[te.Tensor], n: tirx.Expr, c: tirx.Expr,
              *rest: tirx.Expr) -> tirx.Expr:
        """The anchor's input at (n, c, *rest): `tensors` are `exprs`' tensors, in order."""
        parts, operands = tensors[:len(self.parts)], tensors[len(self.parts):]

        def pick(lo: int, hi: int) -> tirx.Expr:  # the part of [lo, hi) holding channel c
            if hi - lo == 1:
                return parts[lo](n, c - self.offsets[lo], *rest)
            mid = (lo + hi) // 2
            return tirx.if_then_else(c < self.offsets[mid], pick(lo, mid), pick(mid, hi))

        # a binary search over the parts' first channels: in the GEMM's copy, c is the same
        # for a whole vector of positions, so the branch is per vector. Bound once by a Let:
        # the steps may read it twice (Relu is a select), and LLVM took 2-3x as long to
        # compile the tree twice (a loop per part instead compiled slower still)
        raw = pick(0, len(parts))
        if len(parts) == 1 or not self.steps.steps:
            return self.steps.apply(raw, (n, c, *rest), operands)
        y = tirx.Var("part", dtype_of(raw))
        return tirx.Let(y, raw, self.steps.apply(y, (n, c, *rest), operands))
