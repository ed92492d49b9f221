"""Elementwise computations on the value a kernel just produced: standalone elementwise ops,
and the epilogues of `etch.Fused` kernels (anchor + steps computed in the same PrimFunc).

An `Epilogue` holds steps `(op, attrs, args)` where each arg is "y" (the running value),
"y<j>" (the value after j steps) or an operand slot. `apply(y, idx, tensors)` evaluates the chain at one output position; the anchor
kernels call it inside their final `te.compute`, which is what makes a fused group one kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import te, tirx

from backends.tvm.lower.context import LowerCtx, Operands, bload, merged_tail
from backends.tvm.lower.fastmath import dtype_of
from backends.tvm.lower.scalar import SCALAR
from compiler.errors import EtchError
from compiler.ir import Node

IndexMap = Callable[[Sequence[tirx.Expr]], Sequence[tirx.Expr]]


@dataclass
class Epilogue:
    """Steps applied to an anchor's result; extra operands come after the anchor's inputs."""

    dtype: str
    steps: list[tuple[str, dict, list[Any]]] = field(default_factory=list)
    operands: Operands = field(default_factory=Operands)
    # Maps the kernel's output index to the node's output index (e.g. a flattened matmul).
    index_map: IndexMap | None = None
    # Steps that finish the anchor op itself (Gemm's alpha and bias, a conv bias): they run
    # before `steps`, and "y0" names their result, the anchor op's output.
    pre: list[tuple[str, dict, list[Any]]] = field(default_factory=list)

    @property
    def exprs(self) -> list:
        return self.operands.exprs

    def apply(self, y: tirx.Expr, idx: Sequence[tirx.Expr],
              tensors: Sequence[te.Tensor]) -> tirx.Expr:
        """The epilogue's value at kernel output position `idx`, given the anchor value y."""
        full = list(self.index_map(idx)) if self.index_map else list(idx)
        values = self.operands.load(tensors, full, bload)
        for op, attrs, args in self.pre:
            y = SCALAR[op](attrs, [_arg(a, [y], values) for a in args], dtype_of(y))
        ys = [y]  # ys[j]: the running value after j steps ("y<j>" in etch.Fused)
        for op, attrs, args in self.steps:
            y = SCALAR[op](attrs, [_arg(a, ys, values) for a in args], self._dt(op, y))
            ys.append(y)
        return y if dtype_of(y) == self.dtype else y.astype(self.dtype)

    def _dt(self, op: str, y: tirx.Expr) -> str:
        return self.dtype if op == "Cast" else dtype_of(y)

    def with_bias(self, slot: int) -> Epilogue:
        """`self`, adding operand `slot` to the anchor's value before the steps."""
        self.pre.append(("Add", {}, ["y", slot]))
        return self


def _arg(a: Any, ys: list, values: list) -> Any:
    if a == "y":
        return ys[-1]
    if isinstance(a, str):
        return ys[int(a[1:])]
    return values[a]


def from_steps(ctx: LowerCtx, node: Node, steps: list[dict], dtype: str) -> Epilogue:
    """An Epilogue for etch.Fused steps whose args index `node.inputs`."""
    used = sorted({a for s in steps for a in s["args"] if not isinstance(a, str)})
    operands = ctx.operands([node.inputs[k] for k in used])
    slot = {k: i for i, k in enumerate(used)}
    decoded = []
    for s in steps:
        if s["op"] not in SCALAR:
            raise EtchError(f"node {node.name}: epilogue step {s['op']} is not elementwise")
        decoded.append((s["op"], s.get("attrs", {}),
                        [a if isinstance(a, str) else slot[a] for a in s["args"]]))
    return Epilogue(dtype, decoded, operands)


def add_operand(epi: Epilogue, ctx: LowerCtx, name: str = "",
                data: np.ndarray | None = None) -> int:
    """Append value `name` (or constant `data`) as an operand of `epi`; returns its slot."""
    extra = ctx.operands([name]) if data is None else ctx.data_operands([np.asarray(data)])
    kind = extra.slots[0]
    if kind[0] == "t":
        epi.operands.slots.append(("t", len(epi.operands.exprs)))
        epi.operands.exprs.extend(extra.exprs)
    else:
        epi.operands.slots.append(kind)
    return len(epi.operands.slots) - 1


def lower_elementwise(ctx: LowerCtx, node: Node) -> None:
    """A standalone elementwise op: one kernel over the broadcast output shape. On an image
    map whose rows are shorter than three vectors and no vector divides them (7 to 35
    columns), the rows and columns are one axis where every operand is whole or broadcast
    along both (`merged_tail`: squeeze-and-excitation's gate [N, C, 1, 1] times
    [N, C, H, W]), vectorised with a short last vector. Such rows ran one value per step
    (LLVM's own vectors need longer loops): measured on Zen 4, one thread, a gate over
    240 x 28 x 28 163 -> 18 us, 256 x 35 x 35 282 -> 30, 512 x 17 x 17 126 -> 15; rows of
    56, 73 and 147 ran as fast unmerged (56 over 144 channels: 40 us as it is, 44 merged)."""
    out = node.outputs[0]
    shape, dtype = ctx.shape(out), ctx.dtype(out)
    ops = ctx.operands(node.inputs)
    fn = SCALAR[node.op]
    view, hints = shape, {}
    if len(shape) >= 4 and shape[-1] % max(ctx.lanes, 1) and shape[-1] < 3 * ctx.lanes:
        names = [n for n, slot in zip(node.inputs, ops.slots) if slot[0] == "t"]
        *views, view = merged_tail([ctx.shape(n) for n in names], shape, keep=len(shape) - 2)
        if view != shape:
            ops.exprs = [ctx.reshape(e, v) for e, v in zip(ops.exprs, views)]
            hints = {"vector_tail": 1}

    def compute(*ts: te.Tensor) -> te.Tensor:
        def body(*i: tirx.Expr) -> tirx.Expr:
            y = fn(node.attrs, ops.load(ts, i), dtype)
            return y if dtype_of(y) == dtype else y.astype(dtype)
        return te.compute(view, body, name="epilogue")

    ctx.bind(node, ctx.reshape(ctx.emit(compute, ops.exprs, node, "elementwise", **hints),
                               shape))


def lower_alias(ctx: LowerCtx, node: Node) -> None:
    """Identity, Dropout (inference), Reshape, Flatten, Squeeze, Unsqueeze: a view."""
    out = node.outputs[0]
    ctx.bind(node, ctx.reshape(ctx.expr(node.inputs[0]), ctx.shape(out)))
